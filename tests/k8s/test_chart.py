"""The Helm chart: lint, render with each values file, refuse bad values, and install on the test control plane.

Lint and template need only the helm binary the test control plane build caches; the install tests
use the running control plane (kwok runs the operator's pod as a fake, so its image need not exist).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from esnode_operator import cli

pytestmark = pytest.mark.k8s

# `testenv` is conftest.Env (conftest modules are not imported by tests, so it is typed Any here).
Env = Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "esnode"
VALUES_FILES = sorted((REPO / "tests" / "fixtures" / "chart-values").glob("*.yaml"))
MONITORING_APIS = ("monitoring.coreos.com/v1/PrometheusRule", "monitoring.coreos.com/v1/ServiceMonitor")
RULES = REPO / "rules" / "esnode-rules.yaml"
DASHBOARDS = REPO / "dashboards"
OPERATOR_RBAC = REPO / "rbac" / "operator.yaml"
RELEASE_NAMESPACE = "gpu-inference"  # namespaced.yaml watches it
# Values the schema or the templates refuse, and what the error must say.
BAD_VALUES = {
    "fleet field type": (
        ["--set", "fleet.spec.powerEnvelope.defaultWatts=lots"],
        "/fleet/spec/powerEnvelope/defaultWatts",
    ),
    "fleet field typo": (
        ["--set", "fleet.spec.powerEnvelop.defaultWatts=3000"],
        "'powerEnvelop' not allowed",
    ),
    "fleet field bound": (
        ["--set", "fleet.spec.scrapeIntervalSeconds=0"],
        "/fleet/spec/scrapeIntervalSeconds",
    ),
    "fleet enum": (["--set", "fleet.spec.imagePullPolicy=Sometimes"], "/fleet/spec/imagePullPolicy"),
    "fleet name": (["--set", "fleet.name=Default_Fleet"], "/fleet/name"),
    "negative replicas": (["--set", "operator.replicas=-1"], "/operator/replicas"),
    "unknown top-level key": (["--set", "opertor.replicas=2"], "'opertor' not allowed"),
    "pull policy": (["--set", "operator.image.pullPolicy=Sometimes"], "/operator/image/pullPolicy"),
    "replicas without peering": (
        ["--set", "operator.replicas=2", "--set", "operator.peering.enabled=false"],
        "operator.replicas above 1 needs operator.peering.enabled",
    ),
    "cluster-wide with a namespace list": (
        [
            "--set",
            "operator.clusterWide=true",
            "--set-json",
            f'operator.watchNamespaces=["{RELEASE_NAMESPACE}"]',
        ],
        "operator.clusterWide serves every namespace",
    ),
    "fleet outside watched namespaces": (
        ["--set-json", 'operator.watchNamespaces=["gpu-training"]'],
        f'fleet namespace "{RELEASE_NAMESPACE}" is not in operator.watchNamespaces',
    ),
}


def _testenv_script() -> Any:
    loader = importlib.machinery.SourceFileLoader("esnode_testenv_chart", str(REPO / "scripts" / "testenv"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def helm_binary() -> Path:
    script = _testenv_script()
    if not script.built():
        pytest.fail("helm is built with the test control plane: run `scripts/testenv build` first")
    binary: Path = script.cache_dir() / "bin" / "helm"
    return binary


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False, timeout=120)


def render(helm: Path, *args: str, monitoring: bool = True, hooks: bool = False) -> list[dict[str, Any]]:
    """The release's objects; with hooks, the uninstall hook's objects (uninstall-hook.yaml) too."""
    api_versions = [f"--api-versions={api}" for api in MONITORING_APIS] if monitoring else []
    no_hooks = [] if hooks else ["--no-hooks"]
    result = run_helm(
        helm, "template", "esnode", str(CHART), "-n", RELEASE_NAMESPACE, *api_versions, *no_hooks, *args
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def rbac_rules_from(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for doc in documents if doc["kind"] in ("ClusterRole", "Role") for rule in doc["rules"]]


# ------------------------------------------------------------------------------------------- offline


@pytest.mark.parametrize("values", VALUES_FILES, ids=[p.stem for p in VALUES_FILES])
def test_lint_is_clean(helm_binary: Path, values: Path) -> None:
    result = run_helm(helm_binary, "lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=[p.stem for p in VALUES_FILES])
def test_every_values_file_renders_valid_objects(helm_binary: Path, values: Path) -> None:
    docs = render(helm_binary, "-f", str(values))
    assert of_kind(docs, "Deployment")
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "esnode"
        assert len(doc["metadata"]["name"]) <= 63


def test_defaults_render_operator_fleet_rules_and_dashboards(helm_binary: Path) -> None:
    docs = render(helm_binary)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted(
        ["ServiceAccount", "Service", "ServiceMonitor", "Deployment"]
        + ["ClusterRole"] * 4  # the operator's two, the agents' node-status one, metrics-reader
        + ["ClusterRoleBinding"] * 3  # the operator's cluster one, the agents' node-status and auth-delegator
        + ["RoleBinding"]  # the operator's rights in its namespace only
        + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 2  # own node; binding subjects
        + ["KopfPeering", "EsnodeFleet", "PrometheusRule"]
        + ["ConfigMap"] * len(list(DASHBOARDS.glob("*.json")))
    )
    container = operator_container(docs)
    assert container["args"][:3] == ["run", f"--namespace={RELEASE_NAMESPACE}", "--peering=esnode-operator"]
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    (fleet,) = of_kind(docs, "EsnodeFleet")
    assert (fleet["metadata"]["name"], fleet["metadata"]["namespace"]) == ("default", RELEASE_NAMESPACE)


@pytest.mark.parametrize("values", VALUES_FILES, ids=[p.stem for p in VALUES_FILES])
def test_operator_accepts_the_rendered_arguments(helm_binary: Path, values: Path) -> None:
    """The Deployment's args parse with the operator's own command line (a renamed flag fails here)."""
    args = operator_container(render(helm_binary, "-f", str(values)))["args"]
    parsed = cli._parser().parse_args(args)
    assert parsed.command == "run"
    assert parsed.all_namespaces or parsed.namespaces


def test_operator_runs_unprivileged(helm_binary: Path) -> None:
    (deployment,) = of_kind(render(helm_binary), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


def test_prometheus_rule_carries_the_rule_file_groups(helm_binary: Path) -> None:
    (rule,) = of_kind(render(helm_binary), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_dashboard_configmaps_carry_the_dashboards_for_the_sidecar(helm_binary: Path) -> None:
    configmaps = of_kind(render(helm_binary), "ConfigMap")
    shipped = {path.name: json.loads(path.read_text()) for path in DASHBOARDS.glob("*.json")}
    rendered = {name: json.loads(text) for cm in configmaps for name, text in cm["data"].items()}
    assert rendered == shipped
    assert {cm["metadata"]["labels"]["grafana_dashboard"] for cm in configmaps} == {"1"}


def operator_rbac() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(OPERATOR_RBAC.read_text()) if doc]


def test_cluster_roles_have_the_operators_rules_and_bind_its_account(helm_binary: Path) -> None:
    # resourceNames name the agents' objects, renamed for the release like them
    renamed = json.dumps(rbac_rules_from(operator_rbac())).replace(
        "esnode-agent-", f"esnode-{RELEASE_NAMESPACE}-agent-"
    )
    expected = json.loads(renamed)
    assert expected, "rbac/operator.yaml holds no ClusterRole rules"
    docs = [
        d
        for d in render(helm_binary)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") not in ("agent", "metrics-reader")
    ]
    assert rbac_rules_from(docs) == expected
    (account,) = of_kind(docs, "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": RELEASE_NAMESPACE}
    bindings = of_kind(docs, "ClusterRoleBinding") + of_kind(docs, "RoleBinding")
    assert len(bindings) == len(
        of_kind(operator_rbac(), "ClusterRoleBinding") + of_kind(operator_rbac(), "RoleBinding")
    )
    assert [b["subjects"] for b in bindings] == [[subject]] * len(bindings)
    assert {b["roleRef"]["name"] for b in bindings} == {
        r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")
    }


def test_agents_objects_are_renamed_per_release_and_the_operator_is_told_the_binding(
    helm_binary: Path,
) -> None:
    """rbac/agents.yaml, renamed like the operator's roles; its names stay consistent throughout."""
    shipped = [d for d in yaml.safe_load_all((REPO / "rbac" / "agents.yaml").read_text()) if d]
    docs = [
        d
        for d in render(helm_binary, "--set", "fullnameOverride=gpu")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"
    ]
    prefix = f"gpu-{RELEASE_NAMESPACE}-agent-"
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"].replace("esnode-agent-", prefix)) for d in shipped
    )
    by_kind = {d["kind"]: d for d in docs if "subjects" not in d["metadata"]["name"]}
    bindings = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRoleBinding"}
    node_status, delegator = bindings[f"{prefix}node-status"], bindings[f"{prefix}auth-delegator"]
    assert node_status["roleRef"]["name"] == by_kind["ClusterRole"]["metadata"]["name"]
    assert delegator["roleRef"]["name"] == "system:auth-delegator"  # built in: not renamed
    # the operator's to fill; an upgrade must not reset them
    assert "subjects" not in node_status and "subjects" not in delegator
    assert by_kind["ValidatingAdmissionPolicyBinding"]["spec"]["policyName"] == f"{prefix}own-node"
    operator_docs = render(helm_binary, "--set", "fullnameOverride=gpu")
    args = operator_container(operator_docs)["args"]
    assert f"--agent-node-status-binding={prefix}node-status" in args
    assert f"--agent-auth-delegator-binding={prefix}auth-delegator" in args
    names = {n for rule in rbac_rules_from(operator_docs) for n in rule.get("resourceNames", [])}
    assert names == {f"{prefix}node-status", f"{prefix}auth-delegator", "system:auth-delegator"}


def test_the_metrics_reader_role_is_shipped_and_bound_to_the_configured_scrapers(helm_binary: Path) -> None:
    name = f"gpu-{RELEASE_NAMESPACE}-metrics-reader"  # cluster-scoped: the release's cluster prefix

    def reader(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        return [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]

    shipped = [d for d in yaml.safe_load_all((REPO / "rbac" / "prometheus.yaml").read_text()) if d]
    unbound = render(helm_binary, "--set", "fullnameOverride=gpu")
    (role,) = reader(unbound, "ClusterRole")
    assert role["rules"] == of_kind(shipped, "ClusterRole")[0]["rules"]
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert reader(unbound, "ClusterRoleBinding") == []  # no scraper named, none bound
    accounts = [
        "--set-json",
        'rbac.metricsReader.serviceAccounts=[{"name": "prometheus-k8s", "namespace": "monitoring"}]',
    ]
    (binding,) = reader(render(helm_binary, "--set", "fullnameOverride=gpu", *accounts), "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == name
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
    ]
    off = render(
        helm_binary, "--set", "fullnameOverride=gpu", "--set", "rbac.metricsReader.create=false", *accounts
    )
    assert reader(off, "ClusterRole") == reader(off, "ClusterRoleBinding") == []


def test_monitoring_objects_wait_for_the_prometheus_operator_api(helm_binary: Path) -> None:
    kinds = {doc["kind"] for doc in render(helm_binary, monitoring=False)}
    assert not kinds & {"PrometheusRule", "ServiceMonitor"}


def test_the_chart_asks_for_the_kubernetes_that_serves_its_admission_policy(helm_binary: Path) -> None:
    """admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy is served from 1.30: older is refused
    before anything is applied, rather than failing half-way through the install."""
    for policy in of_kind(render(helm_binary, "--kube-version=1.30.0"), "ValidatingAdmissionPolicy"):
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    result = run_helm(helm_binary, "template", "esnode", str(CHART), "--kube-version=1.29.9")
    assert result.returncode != 0
    assert "incompatible with Kubernetes v1.29.9" in result.stderr


def test_ha_values_run_several_peered_replicas(helm_binary: Path) -> None:
    docs = render(helm_binary, "-f", str(REPO / "tests/fixtures/chart-values/ha.yaml"))
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert "--peering=esnode-ha" in operator_container(docs)["args"]
    assert [p["metadata"]["name"] for p in of_kind(docs, "KopfPeering")] == ["esnode-ha"]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_namespaced_values_peer_in_each_watched_namespace(helm_binary: Path) -> None:
    docs = render(helm_binary, "-f", str(REPO / "tests/fixtures/chart-values/namespaced.yaml"))
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=gpu-inference",
        "--namespace=gpu-training",
    ]
    assert sorted(p["metadata"]["namespace"] for p in of_kind(docs, "KopfPeering")) == [
        "gpu-inference",
        "gpu-training",
    ]
    assert of_kind(docs, "ClusterKopfPeering") == []
    # Fleets and their children only in the watched namespaces; cluster reads stay cluster-wide.
    role_bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["gpu-inference", "gpu-training"]
    assert {b["roleRef"]["name"] for b in role_bindings} == {"esnode-gpu-inference-operator"}
    assert [b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")] == [
        "esnode-gpu-inference-agent-node-status",  # the agents' (its subjects are the operator's to fill)
        "system:auth-delegator",  # likewise
        "esnode-gpu-inference-operator-cluster",
    ]


def test_fleet_spec_is_passed_through(helm_binary: Path) -> None:
    values_file = REPO / "tests/fixtures/chart-values/fleet-envelope.yaml"
    (fleet,) = of_kind(render(helm_binary, "-f", str(values_file)), "EsnodeFleet")
    assert fleet["metadata"]["name"] == "gpu"
    assert fleet["spec"] == yaml.safe_load(values_file.read_text())["fleet"]["spec"]


def test_minimal_values_install_the_operator_alone(helm_binary: Path) -> None:
    docs = render(helm_binary, "-f", str(REPO / "tests/fixtures/chart-values/minimal.yaml"))
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"EsnodeFleet", "PrometheusRule", "ConfigMap", "Service", "ServiceMonitor"}
    assert not [
        a
        for a in operator_container(docs)["args"]
        if a.startswith("--metrics-port=") and a != "--metrics-port=0"
    ]


def _hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]


@pytest.mark.parametrize(
    ("values", "scope", "bindings"),
    [
        ([], [f"--namespace={RELEASE_NAMESPACE}"], [("RoleBinding", RELEASE_NAMESPACE)]),
        (["--set", "operator.clusterWide=true"], ["--all-namespaces"], [("ClusterRoleBinding", None)]),
        (["-f", str(REPO / "tests/fixtures/chart-values/namespaced.yaml")],
         ["--namespace=gpu-inference", "--namespace=gpu-training"],
         [("RoleBinding", "gpu-inference"), ("RoleBinding", "gpu-training")]),
    ],
)  # fmt: skip
def test_uninstall_first_deletes_the_served_fleets_from_a_hook_of_its_own(
    helm_binary: Path, values: list[str], scope: list[str], bindings: list[tuple[str, str | None]]
) -> None:
    """Issue 19: Helm deleted the operator's RBAC before the fleet, stranding its privileged agents."""
    hooks = _hooks(render(helm_binary, *values, hooks=True))
    for doc in hooks:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    (pod,) = of_kind(hooks, "Pod")
    assert int(pod["metadata"]["annotations"]["helm.sh/hook-weight"]) > max(
        int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks if d is not pod
    )  # its account and rights first
    (container,) = pod["spec"]["containers"]
    parsed = cli._parser().parse_args(container["args"])
    assert parsed.command == "uninstall" and parsed.wait_seconds == 120
    assert [a for a in container["args"] if a.startswith("--namespace") or a == "--all-namespaces"] == scope
    assert (
        pod["spec"]["restartPolicy"] == "Never"
        and container["securityContext"]["allowPrivilegeEscalation"] is False
    )
    (account,) = of_kind(hooks, "ServiceAccount")
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    (role,) = of_kind(hooks, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": ["esnode.io"], "resources": ["esnodefleets"], "verbs": ["list", "delete"]},
        {"apiGroups": ["esnode.io"], "resources": ["esnodenodes"], "verbs": ["list"]},
    ]
    found = [(d["kind"], d["metadata"].get("namespace")) for d in hooks if d["kind"].endswith("RoleBinding")]
    assert found == bindings
    assert (
        _hooks(render(helm_binary, *values, "--set", "operator.uninstall.deleteFleets=false", hooks=True))
        == []
    )


@pytest.mark.parametrize("case", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_refused_with_the_field_named(helm_binary: Path, case: tuple[list[str], str]) -> None:
    args, message = case
    result = run_helm(helm_binary, "template", "esnode", str(CHART), "-n", RELEASE_NAMESPACE, *args)
    assert result.returncode != 0
    assert message in result.stderr


# ------------------------------------------------------------------------------------ on the cluster


@pytest.fixture
def release(testenv: Env, namespace: str) -> Iterator[str]:
    """A unique release name; the release is uninstalled afterwards (its cluster-scoped objects too).

    Without the uninstall hook: no process runs behind these kwok pods (used_by_chain.py's does),
    so the hook pod would never finish, and with no operator ever running, no fleet has a finalizer.
    """
    name = f"esn-{uuid.uuid4().hex[:6]}"
    yield name
    testenv.helm("uninstall", name, "-n", namespace, "--no-hooks", "--wait", "--timeout=60s", check=False)


def as_dict(custom_object: object) -> dict[str, Any]:
    """The Kubernetes client types custom objects as object; they are JSON objects."""
    assert isinstance(custom_object, dict)
    return cast(dict[str, Any], custom_object)


def install(testenv: Env, release: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    # A peering name of its own: ClusterKopfPeering is cluster-scoped and other releases may exist.
    result: subprocess.CompletedProcess[str] = testenv.helm(
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        f"--set=operator.peering.name={release}",
        *args,
        check=False,
    )
    return result


def test_install_makes_the_operator_available_and_creates_the_fleet(
    testenv: Env, namespace: str, release: str
) -> None:
    result = install(testenv, release, namespace, "--wait", "--timeout=120s")
    assert result.returncode == 0, result.stderr
    apps = client.AppsV1Api(testenv.api_client)
    (deployment,) = apps.list_namespaced_deployment(namespace).items
    assert deployment.status is not None
    assert deployment.status.available_replicas == 1
    custom = client.CustomObjectsApi(testenv.api_client)
    fleet = as_dict(
        custom.get_namespaced_custom_object("esnode.io", "v1alpha1", namespace, "esnodefleets", "default")
    )
    assert fleet["metadata"]["labels"]["app.kubernetes.io/instance"] == release
    peering = as_dict(
        custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", release)
    )
    assert peering["metadata"]["name"] == release
    # The bound roles let the operator's account do its work, and no more.
    account = f"--as=system:serviceaccount:{namespace}:{release}-esnode-operator"
    for verb, resource, allowed in [
        ("patch", "esnodefleets.esnode.io", "yes"),
        ("create", "daemonsets.apps", "yes"),
        ("patch", "kopfpeerings.kopf.dev", "yes"),
        ("delete", "nodes", "no"),
        ("get", "secrets", "no"),
    ]:
        answer = testenv.kubectl("auth", "can-i", verb, resource, "-n", namespace, account, check=False)
        assert answer.stdout.strip() == allowed, (verb, resource)


def test_install_creates_rules_and_monitors_where_the_prometheus_operator_is(
    prometheus_operator_crds: Env, namespace: str, release: str
) -> None:
    testenv = prometheus_operator_crds
    result = install(testenv, release, namespace)
    assert result.returncode == 0, result.stderr
    custom = client.CustomObjectsApi(testenv.api_client)
    (rule,) = as_dict(
        custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "prometheusrules")
    )["items"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    monitors = as_dict(
        custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "servicemonitors")
    )
    assert [m["metadata"]["name"] for m in monitors["items"]] == [f"{release}-esnode-operator"]
    configmaps = client.CoreV1Api(testenv.api_client).list_namespaced_config_map(
        namespace, label_selector="grafana_dashboard=1"
    )
    assert len(configmaps.items) == len(list(DASHBOARDS.glob("*.json")))


def test_install_refuses_bad_values_and_creates_nothing(testenv: Env, namespace: str, release: str) -> None:
    result = install(testenv, release, namespace, "--set", "fleet.spec.powerEnvelope.defaultWatts=lots")
    assert result.returncode != 0
    assert "/fleet/spec/powerEnvelope/defaultWatts" in result.stderr
    assert release not in testenv.helm("list", "-n", namespace, "-q").stdout.split()
    assert client.AppsV1Api(testenv.api_client).list_namespaced_deployment(namespace).items == []
