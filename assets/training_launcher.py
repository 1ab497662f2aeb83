"""The resource that starts training stages: where (this machine or a Kubernetes GPU pod) and how (`python -m`,
`accelerate launch` or `torchrun`).

The herding assets hand it a stage module and its settings; the settings travel as Pipes extras, the
command comes from `training.policy.launcher`, and the stage reports back through Pipes (rank 0 only) on
either backend: `PipesSubprocessClient` here, `PipesK8sClient` on a cluster, where the pod reads and
writes FLYWHEEL_HOME on the same shared volume, mounted at the same path, as the run that launched it.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.deploy_check import pinned_image
from assets.resources import library_field
from training.policy.launcher import LaunchConfig, stage_command, stage_env

BACKENDS = ("subprocess", "k8s")
# the stages read models and datasets from the lake and never reach a hub
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class TrainingPod(dg.Config):
    """The Kubernetes pod a training stage runs in (backend 'k8s')."""

    image: str = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_IMAGE") or "",
        description="container image with the project installed (deploy/Dockerfile), pinned by digest "
        "(`REPOSITORY:TAG@sha256:...`, the code server's own); env FLYWHEEL_IMAGE",
    )
    namespace: str | None = Field(default=None, description="namespace of the pods; None = the run's own")
    gpus: int = Field(default=1, description="nvidia.com/gpu per pod (requested and limited)")
    cpu: str = Field(default="8", description="CPU request per pod")
    memory: str = Field(default="64Gi", description="memory request and limit per pod")
    shm_size: str = Field(default="16Gi", description="/dev/shm size: NCCL and data loaders need more than 64Mi")
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="labels a node must carry (e.g. a GPU product label)",
    )
    home_claim: str = Field(
        default="flywheel-home", description="PersistentVolumeClaim (ReadWriteMany) holding FLYWHEEL_HOME"
    )
    home_mount: str = Field(
        default="/flywheel", description="where the claim is mounted; FLYWHEEL_HOME must be this path or below it"
    )
    service_account: str | None = Field(default=None, description="service account of the pods")
    python: str = Field(default="python", description="the image's Python interpreter")


# training pods carry this label: deploy/k8s/networkpolicy.yaml lets them reach only each other
TRAINING_POD_LABELS = {"app.kubernetes.io/component": "training_stage"}
_NON_ROOT = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001}


def training_pod_spec(pod: TrainingPod, home: str) -> dict:
    """The base pod spec of a training stage: GPU requests, node selector, FLYWHEEL_HOME volume, shared memory.

    The image and the command are set by `PipesK8sClient.run`; the Pipes variables are added to the first
    container's env. No secret is mounted and no service-account token either: training reads the lake and
    writes models, never hashes users and never calls the Kubernetes API. It runs as a non-root user with a
    read-only root filesystem and no capabilities; caches and temporary files go to /tmp, an emptyDir.
    """
    home_path = Path(home)
    if not home_path.is_absolute() or not home_path.is_relative_to(pod.home_mount):
        raise ValueError(
            f"FLYWHEEL_HOME={home!r} is not under the training pod's `home_mount`={pod.home_mount!r}: the pod "
            "would not see the lake; mount the shared volume at the same path in runs and training pods"
        )
    if pod.gpus < 0:
        raise ValueError(f"training pod `gpus`={pod.gpus} must be >= 0")
    gpu = {"nvidia.com/gpu": str(pod.gpus)} if pod.gpus else {}
    container = {
        "name": "stage",
        "env": [{"name": "FLYWHEEL_HOME", "value": home}, *({"name": k, "value": v} for k, v in _OFFLINE_ENV.items())],
        "resources": {
            "requests": {"cpu": pod.cpu, "memory": pod.memory, **gpu},
            "limits": {"memory": pod.memory, **gpu},
        },
        "volumeMounts": [
            {"name": "flywheel-home", "mountPath": pod.home_mount},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "imagePullPolicy": "IfNotPresent",  # safe: the image is pinned by digest
        "securityContext": {
            **_NON_ROOT,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {**_NON_ROOT, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "nodeSelector": dict(pod.node_selector),
        "volumes": [
            {"name": "flywheel-home", "persistentVolumeClaim": {"claimName": pod.home_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": pod.shm_size}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if pod.gpus:
        # GPU nodes are usually tainted so that only pods asking for GPUs land there
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    return spec


class TrainingLauncher(dg.ConfigurableResource):
    """How and where SFT / DPO / GRPO stages start. Defaults: one local process, `python -m <stage>`."""

    launcher: str = library_field(LaunchConfig, "launcher", env="FLYWHEEL_TRAIN_LAUNCHER")
    num_processes: int = library_field(LaunchConfig, "num_processes", env="FLYWHEEL_TRAIN_PROCESSES")
    accelerate_config: str | None = library_field(LaunchConfig, "accelerate_config", env="FLYWHEEL_ACCELERATE_CONFIG")
    # the stages' own `trl_config` setting; a plain field here, since importing the stage module loads transformers
    trl_config: str | None = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_TRL_CONFIG") or None,
        description="YAML/JSON file of TRL config fields passed whole to every stage (report_to, optim, ...) "
        "(env FLYWHEEL_TRL_CONFIG)",
    )
    cpu: bool = library_field(LaunchConfig, "cpu")
    env_passthrough: list[str] = Field(
        default_factory=lambda: [n for n in os.environ.get("FLYWHEEL_TRAIN_ENV_PASSTHROUGH", "").split(",") if n],
        description="backend 'subprocess': names of further environment variables a stage receives, beyond the "
        "allow-list (PATH, HOME, PYTHONPATH, HF_*/TRANSFORMERS_*, CUDA_*/NCCL_*, OMP/MKL threads, FLYWHEEL_* "
        "but the salt, ...); secret-looking names are refused (env FLYWHEEL_TRAIN_ENV_PASSTHROUGH, comma-separated)",
    )
    backend: str = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_TRAIN_BACKEND") or "subprocess",
        description="'subprocess' (this machine) or 'k8s' (a pod per stage); env FLYWHEEL_TRAIN_BACKEND",
    )
    pod: TrainingPod = Field(default_factory=TrainingPod, description="the pod of backend 'k8s'")

    def launch_config(self) -> LaunchConfig:
        return LaunchConfig(
            launcher=self.launcher,
            num_processes=self.num_processes,
            accelerate_config=self.accelerate_config,
            cpu=self.cpu,
        )

    def command(self, module: str) -> list[str]:
        """The argv of stage `module`: this interpreter locally, the image's in a pod."""
        if self.backend not in BACKENDS:
            raise ValueError(f"training `backend`={self.backend!r} is unknown: use one of {list(BACKENDS)}")
        python = self.pod.python if self.backend == "k8s" else sys.executable
        return stage_command(module, self.launch_config(), python=python)

    def stage_config(self, config: dict) -> dict:
        """The stage's settings, with the TRL file when one is configured (a stage setting of its own wins)."""
        if self.trl_config and "trl_config" not in config:
            return {**config, "trl_config": self.trl_config}
        return config

    def run(self, context: dg.AssetExecutionContext, module: str, config: dict, home: str):
        """Start stage `module` with `config` (Pipes extras) and wait; the completed Pipes invocation."""
        command = self.command(module)
        extras = {"config": self.stage_config(config)}
        if self.backend == "k8s":
            from dagster_k8s import PipesK8sClient

            return PipesK8sClient().run(
                context=context,
                extras=extras,
                image=pinned_image(self.pod.image, "training pod `image` (env FLYWHEEL_IMAGE)"),
                command=command,
                namespace=self.pod.namespace,
                base_pod_meta={"labels": TRAINING_POD_LABELS},
                base_pod_spec=training_pod_spec(self.pod, home),
            )
        self.launch_config().check_files()
        env = {**stage_env(os.environ, self.env_passthrough), "FLYWHEEL_HOME": home, **_OFFLINE_ENV}
        return StageSubprocessClient().run(command=command, context=context, extras=extras, env=env)


class StageSubprocessClient(dg.PipesSubprocessClient):
    """`PipesSubprocessClient`, but the process gets the given `env` and the Pipes variables only.

    Dagster's client starts from the whole `os.environ`, which in a code server or run worker holds the
    user-hash salt and any storage or hub credential; a training stage needs none of them.
    """

    def run(self, *, context, extras=None, command, env=None, cwd=None) -> dg.PipesClientCompletedInvocation:
        with dg.open_pipes_session(
            context=context, context_injector=self.context_injector, message_reader=self.message_reader, extras=extras
        ) as session:
            process = subprocess.Popen(
                command,
                cwd=cwd or self.cwd,
                env={**self.env, **(env or {}), **session.get_bootstrap_env_vars()},
                stdout=None if self.forward_stdio else subprocess.PIPE,
                stderr=None if self.forward_stdio else subprocess.PIPE,
            )
            try:
                process.wait()
            except dg.DagsterExecutionInterruptedError:
                if self.forward_termination:
                    context.log.info("[pipes] execution interrupted, sending SIGINT to the training stage")
                    process.send_signal(signal.SIGINT)
                    process.wait(timeout=self.termination_timeout_seconds)
                raise
            if process.returncode != 0:
                raise dg.Failure(f"training stage {command[-1]!r} exited with code {process.returncode}")
        return dg.PipesClientCompletedInvocation(session)
