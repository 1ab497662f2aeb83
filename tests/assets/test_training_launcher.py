"""Training stages on Kubernetes, built offline: the run worker Job from deploy/values.yaml and the GPU pod of a
training stage (PipesK8sClient's pod body), with their image, GPU requests, env and command."""

import sys
from pathlib import Path

import pytest
import yaml
from dagster_k8s.job import construct_dagster_k8s_job
from dagster_k8s.pipes import build_pod_body

from assets.training_launcher import TrainingLauncher, TrainingPod, training_pod_spec
from tests.deploy.test_values import launcher_job_config

REPO = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((REPO / "deploy" / "values.yaml").read_text())
DIGEST = "@sha256:" + "ab" * 32


def _env(container) -> dict:
    return {e.name: e for e in container.env or []}


def test_local_default_is_one_python_process_and_passes_the_trl_file():
    launcher = TrainingLauncher(launcher="python", backend="subprocess", trl_config=None)
    assert launcher.command("training.policy.sft") == [sys.executable, "-m", "training.policy.sft"]
    assert launcher.stage_config({"max_steps": 2}) == {"max_steps": 2}
    with_file = TrainingLauncher(trl_config="trl.yaml")
    assert with_file.stage_config({"max_steps": 2}) == {"max_steps": 2, "trl_config": "trl.yaml"}
    assert with_file.stage_config({"trl_config": "own.yaml"})["trl_config"] == "own.yaml"
    with pytest.raises(ValueError, match="backend"):
        TrainingLauncher(backend="slurm").command("training.policy.sft")


def test_training_pod_requests_gpus_on_gpu_nodes_with_the_shared_home():
    pod = TrainingPod(image="registry.example.com/cf:1" + DIGEST, gpus=4, node_selector={"gpu": "h100"})
    launcher = TrainingLauncher(
        launcher="accelerate", num_processes=4, accelerate_config="/flywheel/fsdp.yaml", backend="k8s", pod=pod
    )
    command = launcher.command("training.policy.dpo")
    body = build_pod_body(
        pod_name="dagster-dpo",
        image=pod.image,
        command=command,
        env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"},
        base_pod_meta=None,
        base_pod_spec=training_pod_spec(pod, "/flywheel/home"),
    )
    spec = body.spec
    (container,) = spec.containers
    assert container.image == "registry.example.com/cf:1" + DIGEST
    assert container.command == [
        "python",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "/flywheel/fsdp.yaml",
        "--num_processes",
        "4",
        "-m",
        "training.policy.dpo",
    ]
    assert container.resources.requests["nvidia.com/gpu"] == "4" and container.resources.limits["nvidia.com/gpu"] == "4"
    assert spec.node_selector == {"gpu": "h100"} and spec.restart_policy == "Never"
    assert any(t.key == "nvidia.com/gpu" for t in spec.tolerations)
    env = _env(container)
    assert env["FLYWHEEL_HOME"].value == "/flywheel/home" and env["HF_HUB_OFFLINE"].value == "1"
    assert env["DAGSTER_PIPES_CONTEXT"].value == "ctx" and env["DAGSTER_PIPES_MESSAGES"].value == "msg"
    # training never hashes users: no secret reaches its pod
    assert "FLYWHEEL_USER_SALT" not in env
    mounts = {m.name: m.mount_path for m in container.volume_mounts}
    assert mounts == {"flywheel-home": "/flywheel", "dshm": "/dev/shm", "tmp": "/tmp"}
    claims = {v.name: v.persistent_volume_claim for v in spec.volumes}
    assert claims["flywheel-home"].claim_name == "flywheel-home"


def test_training_pod_refuses_a_home_outside_its_volume():
    with pytest.raises(ValueError, match="home_mount"):
        training_pod_spec(TrainingPod(), "/data/flywheel")
    cpu_only = training_pod_spec(TrainingPod(gpus=0), "/flywheel")
    assert "nvidia.com/gpu" not in cpu_only["containers"][0]["resources"]["requests"]
    assert "tolerations" not in cpu_only


def test_run_worker_job_from_the_helm_values_gets_the_salt_from_a_secret():
    launcher = VALUES["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    cfg = launcher["config"]["k8sRunLauncher"]
    deployment = VALUES["dagster-user-deployments"]["deployments"][0]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    # the chart turns these values into the run launcher's config; the same fields build the Job here
    job_config = launcher_job_config(cfg, image)
    args = ["dagster", "api", "execute_run", "{}"]
    job = construct_dagster_k8s_job(job_config, args, "dagster-run-abc", component="run_worker")
    (container,) = job.spec.template.spec.containers
    assert container.image == image and container.args == args
    assert [e.secret_ref.name for e in container.env_from if e.secret_ref] == ["flywheel-secrets"]
    env = _env(container)
    assert env["FLYWHEEL_HOME"].value == "/flywheel/home" and env["FLYWHEEL_TRAIN_BACKEND"].value == "k8s"
    assert "FLYWHEEL_USER_SALT" not in env  # only through the Secret, never as a literal value
    assert {m.mount_path for m in container.volume_mounts} >= {"/flywheel"}
    assert "nvidia.com/gpu" not in (container.resources.requests or {})
    # the runs' FLYWHEEL_HOME is under the mount the training pods use, so both see the same lake
    training_pod_spec(TrainingPod(), env["FLYWHEEL_HOME"].value)


def test_shipped_secret_and_volume_match_the_names_the_values_use():
    docs = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "storage.yaml").read_text()))
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == TrainingPod().home_claim and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    secrets = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "secret.example.yaml").read_text()))
    secret = next(d for d in secrets if "FLYWHEEL_USER_SALT" in d["stringData"])
    assert secret["metadata"]["name"] == VALUES["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"][0]["name"]


def test_k8s_backend_hands_pipes_the_pod_image_and_command(monkeypatch):
    import dagster_k8s

    calls = []
    monkeypatch.setattr(dagster_k8s.PipesK8sClient, "run", lambda self, **kwargs: calls.append(kwargs) or "done")
    pod = TrainingPod(image="registry.example.com/cf:2" + DIGEST, namespace="flywheel")
    launcher = TrainingLauncher(launcher="torchrun", num_processes=8, backend="k8s", pod=pod, trl_config="t.yaml")
    assert launcher.run(None, "training.policy.grpo", {"max_steps": 5}, home="/flywheel/home") == "done"
    (call,) = calls
    assert call["image"] == "registry.example.com/cf:2" + DIGEST and call["namespace"] == "flywheel"
    assert call["base_pod_meta"]["labels"] == {"app.kubernetes.io/component": "training_stage"}
    assert call["command"][:5] == ["python", "-m", "torch.distributed.run", "--nproc_per_node", "8"]
    assert call["command"][-1] == "training.policy.grpo"
    assert call["extras"] == {"config": {"max_steps": 5, "trl_config": "t.yaml"}}
    env = {e["name"]: e["value"] for e in call["base_pod_spec"]["containers"][0]["env"]}
    assert env["FLYWHEEL_HOME"] == "/flywheel/home"
    with pytest.raises(ValueError, match="home_mount"):
        launcher.run(None, "training.policy.grpo", {}, home="/elsewhere")


@pytest.mark.parametrize(
    "image, match",
    [
        ("", "not set"),
        ("registry.example.com/cf:2", "no valid digest"),
        ("registry.example.com/cf:latest" + DIGEST, "latest"),
        ("registry.example.com/cf:2@sha256:SET-THE-DIGEST", "placeholder digest"),
        ("registry.example.com/cf:2@sha256:abc", "no valid digest"),
    ],
)
def test_k8s_backend_refuses_an_image_not_pinned_by_digest(monkeypatch, image, match):
    import dagster_k8s

    monkeypatch.setattr(dagster_k8s.PipesK8sClient, "run", lambda self, **kwargs: pytest.fail("started a pod"))
    launcher = TrainingLauncher(backend="k8s", pod=TrainingPod(image=image))
    with pytest.raises(ValueError, match=match) as err:
        launcher.run(None, "training.policy.sft", {}, home="/flywheel/home")
    assert "FLYWHEEL_IMAGE" in str(err.value) and "sha256" in str(err.value)


def test_training_pod_image_never_falls_back_to_latest(monkeypatch):
    monkeypatch.delenv("FLYWHEEL_IMAGE", raising=False)
    assert TrainingPod().image == ""
    monkeypatch.setenv("FLYWHEEL_IMAGE", "registry.example.com/cf:3" + DIGEST)
    assert TrainingPod().image == "registry.example.com/cf:3" + DIGEST


def test_training_pod_has_no_token_no_root_and_a_read_only_root_filesystem():
    image = "registry.example.com/cf:1" + DIGEST
    body = build_pod_body(
        pod_name="dagster-sft",
        image=image,
        command=["python", "-m", "training.policy.sft"],
        env_vars={},
        base_pod_meta={"labels": {"app.kubernetes.io/component": "training_stage"}},
        base_pod_spec=training_pod_spec(TrainingPod(image=image, service_account="flywheel-runs"), "/flywheel/home"),
    )
    spec = body.spec
    assert spec.automount_service_account_token is False
    assert spec.security_context.run_as_non_root and spec.security_context.run_as_user != 0
    assert spec.security_context.seccomp_profile.type == "RuntimeDefault"
    (container,) = spec.containers
    sc = container.security_context
    assert sc.read_only_root_filesystem and sc.run_as_non_root and sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"] and not sc.capabilities.add and not sc.privileged
    assert {m.mount_path for m in container.volume_mounts} >= {"/tmp", "/dev/shm", "/flywheel"}
    assert next(v for v in spec.volumes if v.name == "tmp").empty_dir is not None
    assert body.metadata.labels["app.kubernetes.io/component"] == "training_stage"


def test_local_stage_runs_with_the_allow_listed_environment_only(tmp_path, monkeypatch):
    import dagster as dg

    # a stand-in stage: reports the names of the variables it was started with, through Pipes
    (tmp_path / "envstage.py").write_text(
        "import os\n"
        "from dagster_pipes import open_dagster_pipes\n"
        "with open_dagster_pipes() as pipes:\n"
        "    pipes.report_asset_materialization(metadata={'env': {'raw_value': sorted(os.environ), 'type': 'json'}})\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{REPO}")
    monkeypatch.setenv("FLYWHEEL_USER_SALT", "s3cret-salt-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret")
    monkeypatch.setenv("SOME_UNLISTED_VARIABLE", "x")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    launcher = TrainingLauncher(launcher="python", backend="subprocess", trl_config=None)

    @dg.asset
    def stage(context: dg.AssetExecutionContext):
        return launcher.run(context, "envstage", {"max_steps": 1}, home=str(tmp_path / "home")).get_materialize_result()

    result = dg.materialize([stage])
    assert result.success
    (mat,) = result.get_asset_materialization_events()
    names = set(mat.materialization.metadata["env"].value)
    assert {"PATH", "PYTHONPATH", "OMP_NUM_THREADS", "FLYWHEEL_HOME", "HF_HUB_OFFLINE"} <= names
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= names
    assert not names & {"FLYWHEEL_USER_SALT", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "SOME_UNLISTED_VARIABLE"}


def test_local_stage_failure_names_the_stage(tmp_path, monkeypatch):
    import dagster as dg

    (tmp_path / "failstage.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{REPO}")
    launcher = TrainingLauncher(launcher="python", backend="subprocess", trl_config=None)

    @dg.asset
    def stage(context: dg.AssetExecutionContext):
        launcher.run(context, "failstage", {}, home=str(tmp_path / "home"))

    with pytest.raises(dg.Failure, match="'failstage' exited with code 3"):
        dg.materialize([stage])
