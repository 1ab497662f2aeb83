"""deploy/values.yaml, read as the Dagster chart reads it: an external Postgres whose password only a Secret holds,
every container non-root with a read-only root filesystem and no capabilities, every image pinned by digest; and
the run worker Job those values give, built offline by dagster-k8s."""

import re
from pathlib import Path

import pytest
import yaml
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

from assets.deploy_check import check_helm_values, helm_images, main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VALUES_TEXT = (DEPLOY / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
DIGEST = "sha256:" + "0123456789abcdef" * 4
LAUNCHER = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
(CODE,) = VALUES["dagster-user-deployments"]["deployments"]
# (name, pod securityContext, container securityContext, volumes, volumeMounts) of every pod the chart creates
WORKLOADS = [
    ("webserver", *(VALUES["dagsterWebserver"].get(k) for k in ("podSecurityContext", "securityContext"))),
    ("daemon", *(VALUES["dagsterDaemon"].get(k) for k in ("podSecurityContext", "securityContext"))),
    ("code server", CODE.get("podSecurityContext"), CODE.get("securityContext")),
    ("run worker", LAUNCHER["runK8sConfig"]["podSpecConfig"].get("securityContext"), LAUNCHER.get("securityContext")),
]
MOUNTS = [
    ("webserver", VALUES["dagsterWebserver"]),
    ("daemon", VALUES["dagsterDaemon"]),
    ("code server", CODE),
    ("run worker", LAUNCHER),
]


def _pinned(values_text: str) -> dict:
    return yaml.safe_load(values_text.replace("sha256:SET-THE-DIGEST", DIGEST))


def _all_keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _all_keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _all_keys(v)}
    return set()


def test_postgres_is_external_and_its_password_only_in_a_secret():
    assert VALUES["postgresql"]["enabled"] is False and VALUES["generatePostgresqlPasswordSecret"] is False
    assert VALUES["postgresql"]["postgresqlHost"] and VALUES["postgresql"]["postgresqlParams"]["sslmode"] == "require"
    assert not {"postgresqlPassword", "password"} & _all_keys(VALUES), "no password in the values"
    secrets = list(yaml.safe_load_all((DEPLOY / "k8s" / "secret.example.yaml").read_text()))
    pg = next(s for s in secrets if s["metadata"]["name"] == VALUES["global"]["postgresqlSecretName"])
    assert pg["kind"] == "Secret" and "postgresql-password" in pg["stringData"]


@pytest.mark.parametrize("name, pod, container", WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_every_workload_runs_non_root_read_only_without_capabilities(name, pod, container):
    assert pod and pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
    assert container and container["runAsNonRoot"] is True and container["runAsUser"] > 0, name
    assert container["readOnlyRootFilesystem"] is True, name
    assert container["allowPrivilegeEscalation"] is False and container["privileged"] is False, name
    assert container["capabilities"] == {"drop": ["ALL"]}, name


@pytest.mark.parametrize("name, block", MOUNTS, ids=[m[0] for m in MOUNTS])
def test_writable_paths_are_empty_dirs_on_a_read_only_root(name, block):
    volumes = {v["name"]: v for v in block["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in block["volumeMounts"]}
    for path in ("/tmp", "/opt/dagster/dagster_home/storage"):
        assert path in mounts and "emptyDir" in volumes[mounts[path]], (name, path)


def test_webserver_is_a_cluster_ip_on_an_unprivileged_port():
    web = VALUES["dagsterWebserver"]
    assert web["service"]["type"] == "ClusterIP" and web["service"]["port"] >= 1024
    assert web["readinessProbe"]["httpGet"]["port"] == web["service"]["port"]


def test_every_image_is_pinned_once_the_operator_sets_the_digests():
    images = dict(helm_images(VALUES))
    # the chart's own images, the init containers' and the project's: none left to a default tag
    assert {
        "postgresql.image",
        "busybox.image",
        "dagsterWebserver.image",
        "dagsterDaemon.image",
        "dagster-user-deployments.deployments[0].image",
    } <= set(images)
    problems = check_helm_values(VALUES)
    assert len(problems) == len(images) and all("placeholder digest" in p for p in problems)
    pinned = _pinned(VALUES_TEXT)
    assert check_helm_values(pinned) == []
    assert all(ref.endswith("@" + DIGEST) for ref in dict(helm_images(pinned)).values())


def test_the_check_refuses_a_tag_alone_latest_and_a_training_image_that_is_not_the_code_servers(tmp_path, capsys):
    tag_only = _pinned(VALUES_TEXT)
    tag_only["dagsterDaemon"]["image"]["tag"] = "1.13.27"
    assert [p for p in check_helm_values(tag_only) if p.startswith("dagsterDaemon.image=")]
    latest = _pinned(VALUES_TEXT)
    latest["dagster-user-deployments"]["deployments"][0]["image"]["tag"] = "latest@" + DIGEST
    assert any("`latest`" in p for p in check_helm_values(latest))
    other = _pinned(
        VALUES_TEXT.replace(
            "FLYWHEEL_IMAGE=registry.example.com/characterflywheel:0.1.0",
            "FLYWHEEL_IMAGE=registry.example.com/characterflywheel:0.0.9",
        )
    )
    (problem,) = check_helm_values(other)
    assert problem.startswith("runLauncher.config.k8sRunLauncher.envVars[2]=") and "not the code server's" in problem

    shipped = tmp_path / "values.yaml"
    shipped.write_text(VALUES_TEXT)
    assert main([str(shipped)]) == 1 and "placeholder digest" in capsys.readouterr().err
    shipped.write_text(yaml.safe_dump(_pinned(VALUES_TEXT)))
    assert main([str(shipped)]) == 0


def launcher_job_config(cfg: dict, image: str) -> DagsterK8sJobConfig:
    """The Job config the chart's run launcher values (`runLauncher.config.k8sRunLauncher`) give a pod of `image`."""
    return DagsterK8sJobConfig(
        job_image=image,
        dagster_home="/opt/dagster/dagster_home",
        image_pull_policy=cfg["imagePullPolicy"],
        instance_config_map="dagster-instance",
        env_secrets=[s["name"] for s in cfg["envSecrets"]],
        env_vars=cfg["envVars"],
        volume_mounts=cfg["volumeMounts"],
        volumes=cfg["volumes"],
        resources=cfg["resources"],
    )


def test_run_worker_job_runs_locked_down_under_its_service_account():
    values = _pinned(VALUES_TEXT)
    cfg = values["runLauncher"]["config"]["k8sRunLauncher"]
    code = values["dagster-user-deployments"]["deployments"][0]
    image = f"{code['image']['repository']}:{code['image']['tag']}"
    job_config = launcher_job_config(cfg, image)
    # the launcher hands its `security_context` over as container config, as the run's container context does
    user_config = UserDefinedDagsterK8sConfig(
        container_config={"security_context": cfg["securityContext"]},
        pod_spec_config=cfg["runK8sConfig"]["podSpecConfig"],
    )
    job = construct_dagster_k8s_job(
        job_config, ["dagster", "api", "execute_run", "{}"], "dagster-run-abc", user_config, component="run_worker"
    )
    pod = job.spec.template
    assert pod.metadata.labels["app.kubernetes.io/component"] == "run_worker"  # what the NetworkPolicies select
    assert pod.spec.service_account_name == "flywheel-runs"
    assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == 10001
    (container,) = pod.spec.containers
    assert container.image == image and re.search(r"@sha256:[0-9a-f]{64}$", container.image)
    sc = container.security_context
    assert sc.read_only_root_filesystem and sc.allow_privilege_escalation is False and sc.capabilities.drop == ["ALL"]
    assert {m.mount_path for m in container.volume_mounts} >= {"/flywheel", "/tmp"}


def test_step_jobs_of_the_k8s_executor_run_locked_down_beside_the_lake():
    """FLYWHEEL_EXECUTOR=k8s: the consolidation job's executor config, built from these values, is valid for
    dagster-k8s, and a step Job (what dagster-k8s builds: the run launcher's env, Secret, volumes and resources,
    its run pod config, then the executor's step config) runs non-root, read-only, without a token, with the
    lake's volume mounted."""
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    from assets.executors import k8s_executor_config

    values = _pinned(VALUES_TEXT)
    config = k8s_executor_config(values, workers=8)
    assert validate_config(k8s_job_executor.config_schema.config_type, config).success
    assert config["max_concurrent"] == 8
    cfg = values["runLauncher"]["config"]["k8sRunLauncher"]
    image = "registry.example.com/characterflywheel:0.1.0@" + DIGEST
    job_config = launcher_job_config(cfg, image)
    step = config["step_k8s_config"]
    user_config = UserDefinedDagsterK8sConfig(
        container_config={"securityContext": cfg["securityContext"], **step["container_config"]},
        pod_spec_config={**cfg["runK8sConfig"]["podSpecConfig"], **step["pod_spec_config"]},
    )
    job = construct_dagster_k8s_job(
        job_config, ["dagster", "api", "execute_step", "{}"], "dagster-step-abc", user_config, component="step_worker"
    )
    pod = job.spec.template
    assert pod.metadata.labels["app.kubernetes.io/component"] == "step_worker"  # what the NetworkPolicies select
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user == 10001
    (container,) = pod.spec.containers
    sc = container.security_context
    assert sc.read_only_root_filesystem and sc.allow_privilege_escalation is False and sc.capabilities.drop == ["ALL"]
    assert {m.mount_path for m in container.volume_mounts} >= {"/flywheel", "/tmp"}
    assert "FLYWHEEL_HOME" in {e.name for e in container.env} and container.env_from[0].secret_ref.name


def test_the_executor_is_chosen_by_configuration(monkeypatch):
    from assets.executors import consolidation_executor

    monkeypatch.setenv("FLYWHEEL_WORKERS", "3")
    assert consolidation_executor().name == "multiprocess"
    monkeypatch.setenv("FLYWHEEL_EXECUTOR", "k8s")
    assert consolidation_executor().name == "k8s"
    monkeypatch.setenv("FLYWHEEL_EXECUTOR", "ray")
    with pytest.raises(ValueError, match="FLYWHEEL_EXECUTOR='ray'"):
        consolidation_executor()
    monkeypatch.setenv("FLYWHEEL_EXECUTOR", "multiprocess")
    monkeypatch.setenv("FLYWHEEL_WORKERS", "two")
    with pytest.raises(ValueError, match="`workers`"):
        consolidation_executor()
    monkeypatch.setenv("FLYWHEEL_WORKERS", "0")
    with pytest.raises(ValueError, match="FLYWHEEL_WORKERS"):
        consolidation_executor()


def test_the_image_runs_as_a_non_root_user_and_installs_from_the_lock():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert int(users[-1].split(":")[0]) == WORKLOADS[0][1]["runAsUser"]
