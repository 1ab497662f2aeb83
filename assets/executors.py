"""The engine of a consolidation run's steps: Dagster's multiprocess executor on one machine, its Kubernetes
Job executor (one Job per step, dagster-k8s) on a cluster. `FLYWHEEL_EXECUTOR` picks one when the code location
loads; both run at most `workers` steps at once (the curation settings' `workers`, env FLYWHEEL_WORKERS).

On a cluster the step pods are shaped like the run pods: dagster-k8s gives them the run launcher's image, env,
Secret, FLYWHEEL_HOME volume and resources, and the executor adds the run pods' security contexts from the Helm
values the image carries (`deploy/values.yaml`, or FLYWHEEL_K8S_VALUES). A step pod starts nothing, so it gets
no service-account token.
"""

import os
from pathlib import Path

import dagster as dg
import yaml

from pipeline.sharding import ShardConfig, int_from_env

EXECUTORS = ("multiprocess", "k8s")
EXECUTOR_ENV = "FLYWHEEL_EXECUTOR"
VALUES_ENV = "FLYWHEEL_K8S_VALUES"
DEFAULT_VALUES = Path(__file__).resolve().parents[1] / "deploy" / "values.yaml"


def executor_kind() -> str:
    kind = os.environ.get(EXECUTOR_ENV, "").strip() or "multiprocess"
    if kind not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={kind!r} is unknown: set it to one of {list(EXECUTORS)} (or leave it unset)")
    return kind


def configured_workers() -> int:
    default = ShardConfig().workers
    return ShardConfig(workers=int_from_env("workers", "FLYWHEEL_WORKERS", default)).workers


def k8s_executor_config(values: dict, workers: int) -> dict:
    """The `k8s_job_executor` config of the chart `values`: step Jobs take the run launcher's image, env, Secret,
    volumes and resources from it (dagster-k8s carries them over); this adds what it does not: at most `workers`
    steps at once, the run pods' security contexts, and no service-account token."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    pod_spec = launcher.get("runK8sConfig", {}).get("podSpecConfig", {})
    return {
        "max_concurrent": ShardConfig(workers=workers).workers,
        "step_k8s_config": {
            # the chart's spelling (camelCase), so these replace the keys the run pod config carries over
            "container_config": {"securityContext": launcher.get("securityContext") or {}},
            "pod_spec_config": {
                "securityContext": pod_spec.get("securityContext") or {},
                "automountServiceAccountToken": False,
            },
        },
    }


def consolidation_executor() -> dg.ExecutorDefinition:
    workers = configured_workers()
    if executor_kind() == "k8s":
        from dagster_k8s import k8s_job_executor

        path = Path(os.environ.get(VALUES_ENV) or DEFAULT_VALUES)
        if not path.is_file():
            raise FileNotFoundError(f"{EXECUTOR_ENV}=k8s needs the chart values at {path}: set {VALUES_ENV}")
        return k8s_job_executor.configured(k8s_executor_config(yaml.safe_load(path.read_text()), workers))
    # each step is a process: forked from a server that imported the code location once, a step starts in a
    # fraction of a second instead of importing torch, faiss and Dagster again (seconds per step)
    start = {"forkserver": {"preload_modules": ["assets.definitions"]}}
    return dg.multiprocess_executor.configured({"max_concurrent": workers, "start_method": start})
