"""deploy/k8s: who may reach whom under the NetworkPolicies, evaluated on the labels the pods really carry (the
chart's, and the run worker and training pods that dagster-k8s builds offline), and a Role with only the verbs
that starting a training stage uses."""

from pathlib import Path

import pytest
import yaml
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job
from dagster_k8s.pipes import build_pod_body

from assets.training_launcher import TRAINING_POD_LABELS, TrainingPod, training_pod_spec
from pipeline.schema import PLACEHOLDER_SALTS, SALT_ENV

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VALUES = yaml.safe_load((DEPLOY / "values.yaml").read_text())
POLICIES = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "networkpolicy.yaml").read_text()) if d]
RBAC = list(yaml.safe_load_all((DEPLOY / "k8s" / "rbac.yaml").read_text()))
NS, DB_NS, INGRESS_NS = "flywheel", "flywheel-db", "ingress-nginx"
CHART = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": "dagster"}


def _run_worker_labels() -> dict:
    config = DagsterK8sJobConfig(job_image="x@sha256:" + "0" * 64, dagster_home="/opt/dagster/dagster_home")
    job = construct_dagster_k8s_job(config, ["dagster"], "dagster-run-1", component="run_worker")
    return dict(job.spec.template.metadata.labels)


def _step_worker_labels() -> dict:
    config = DagsterK8sJobConfig(job_image="x@sha256:" + "0" * 64, dagster_home="/opt/dagster/dagster_home")
    job = construct_dagster_k8s_job(config, ["dagster"], "dagster-step-1", component="step_worker")
    return dict(job.spec.template.metadata.labels)


def _training_labels() -> dict:
    body = build_pod_body(
        pod_name="dagster-sft",
        image="x@sha256:" + "0" * 64,
        command=["python"],
        env_vars={},
        base_pod_meta={"labels": TRAINING_POD_LABELS},
        base_pod_spec=training_pod_spec(TrainingPod(), "/flywheel/home"),
    )
    return dict(body.metadata.labels)


# (namespace, labels) of every pod that takes part
PODS = {
    "webserver": (NS, {**CHART, "component": "dagster-webserver"}),
    "daemon": (NS, {**CHART, "component": "dagster-daemon"}),
    "code server": (NS, {**CHART, "component": "user-deployments", "deployment": "characterflywheel"}),
    "run worker": (NS, _run_worker_labels()),
    "step worker": (NS, _step_worker_labels()),
    "training": (NS, _training_labels()),
    "ingress controller": (INGRESS_NS, {"app.kubernetes.io/name": "ingress-nginx"}),
    "other pod in the namespace": (NS, {"app": "something-else"}),
    "pod elsewhere": ("default", {"app": "anything"}),
    "postgres": (DB_NS, {"app.kubernetes.io/name": "postgresql"}),
    "dns": ("kube-system", {"k8s-app": "kube-dns"}),
}


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if (
            (op == "In" and value not in expr["values"])
            or (op == "NotIn" and present and value in expr["values"])
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def _peer_matches(peer: dict, policy_ns: str, pod: tuple[str, dict]) -> bool:
    ns, labels = pod
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ns}):
            return False
    elif ns != policy_ns:
        return False
    return _selects(peer.get("podSelector") or {}, labels)


def _port_matches(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def allowed(source: str, target: str, port: int, protocol: str = "TCP") -> bool:
    """Whether `source` may open a connection to `target`:`port`: the egress policies of the source and the
    ingress policies of the target must both admit it (no policy of a direction admits everything)."""
    src, dst = PODS[source], PODS[target]

    def admitted(pod, direction: str, rules_key: str, peer_key: str, other) -> bool:
        ns, labels = pod
        chosen = [
            p
            for p in POLICIES
            if p["metadata"]["namespace"] == ns
            and direction in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], labels)
        ]
        if not chosen:
            return True
        return any(
            _port_matches(rule, port, protocol)
            and any(_peer_matches(peer, p["metadata"]["namespace"], other) for peer in rule.get(peer_key) or [])
            for p in chosen
            for rule in p["spec"].get(rules_key) or []
        )

    return admitted(src, "Egress", "egress", "to", dst) and admitted(dst, "Ingress", "ingress", "from", src)


WEB_PORT = VALUES["dagsterWebserver"]["service"]["port"]
GRPC_PORT = VALUES["dagster-user-deployments"]["deployments"][0]["port"]
PG_PORT = VALUES["postgresql"]["service"]["port"]


def test_only_the_ingress_controller_reaches_the_webserver():
    reach = {name for name in PODS if name != "webserver" and allowed(name, "webserver", WEB_PORT)}
    assert reach == {"ingress controller"}
    assert not allowed("ingress controller", "webserver", 22)


def test_only_dagsters_own_pods_reach_the_code_server():
    reach = {name for name in PODS if name != "code server" and allowed(name, "code server", GRPC_PORT)}
    assert reach == {"webserver", "daemon", "run worker"}


def test_only_dagsters_own_pods_reach_postgres_and_training_never():
    reach = {name for name in PODS if name != "postgres" and allowed(name, "postgres", PG_PORT)}
    assert reach == {"webserver", "daemon", "code server", "run worker", "step worker"}


def test_training_pods_reach_only_each_other_and_dns():
    assert allowed("training", "training", 29500)  # ranks of one stage rendezvous
    assert allowed("training", "dns", 53, "UDP")
    reach = {name for name in PODS if name != "training" and allowed("training", name, 443)}
    assert reach == set()
    assert {name for name in PODS if name != "training" and allowed(name, "training", 29500)} == set()


def test_nothing_else_in_the_namespace_accepts_connections():
    for target in ("daemon", "run worker", "step worker", "other pod in the namespace"):
        assert not any(allowed(name, target, 8080) for name in PODS if name != target), target


def test_role_grants_only_the_verbs_a_training_stage_uses():
    role = next(d for d in RBAC if d["kind"] == "Role" and d["metadata"]["name"] == "flywheel-training-pods")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    # PipesK8sClient: create the pod, read it, list it, follow its log, read events on failure, delete it
    assert granted == {
        ("pods", "create"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "delete"),
        ("pods/log", "get"),
        ("events", "list"),
    }
    binding = next(d for d in RBAC if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == role["metadata"]["name"])
    account = next(d for d in RBAC if d["kind"] == "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == [account["metadata"]["name"]]
    pod_spec = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert pod_spec["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("path", sorted((DEPLOY / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_parse_and_live_in_a_named_namespace(path):
    for doc in yaml.safe_load_all(path.read_text()):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["namespace"] in (NS, DB_NS), path.name


def test_the_example_salt_is_one_production_refuses():
    secrets = list(yaml.safe_load_all((DEPLOY / "k8s" / "secret.example.yaml").read_text()))
    example = next(s["stringData"][SALT_ENV] for s in secrets if SALT_ENV in s["stringData"])
    assert example in PLACEHOLDER_SALTS


def test_step_jobs_role_grants_only_what_the_job_executor_uses():
    role = next(d for d in RBAC if d["kind"] == "Role" and d["metadata"]["name"] == "flywheel-step-jobs")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    # k8s_job_executor: create a step's Job, read its status, delete it when the step ends or the run is stopped
    assert granted == {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "delete"),
        ("batch", "jobs/status", "get"),
    }
    binding = next(d for d in RBAC if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "flywheel-step-jobs")
    pod_spec = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    assert [s["name"] for s in binding["subjects"]] == [pod_spec["serviceAccountName"]]
