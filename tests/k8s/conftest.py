"""Fixtures for tests that need a real Kubernetes control plane (scripts/testenv).

`testenv` (session): brings the environment up, or reuses one a developer started with
`scripts/testenv up`, and tears down only what a test session started (the last session using
it stops it; set ESNODE_TESTENV_KEEP=1 to leave it running). `namespace`: a fresh namespace per test, deleted afterwards.
`prometheus_operator_crds`: applies the pinned ServiceMonitor/PrometheusRule CRDs for one
test and removes them again, so every other test sees a cluster without them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "testenv"
CRD_DIR = REPO / "tests" / "testenv" / "crds"
PROMETHEUS_OPERATOR_CRDS = {
    "servicemonitors.monitoring.coreos.com": CRD_DIR / "monitoring.coreos.com_servicemonitors.yaml",
    "prometheusrules.monitoring.coreos.com": CRD_DIR / "monitoring.coreos.com_prometheusrules.yaml",
}
MONITORING_GROUP = "monitoring.coreos.com"


def _load_script() -> ModuleType:
    """scripts/testenv as a module (it has no .py suffix), for its paths and health check."""
    loader = importlib.machinery.SourceFileLoader("esnode_testenv", str(SCRIPT))
    spec = importlib.util.spec_from_loader("esnode_testenv", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def wait_until(
    what: str, predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.5
) -> None:
    """Poll predicate until it is true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class TestEnv:
    """A running control plane: a configured client, the kubeconfig and the tool binaries."""

    __test__ = False  # not a test class, despite the name

    api_client: object  # kubernetes.client.ApiClient
    kubeconfig: Path
    bin_dir: Path
    server: str
    log_dir: Path

    MONITORING_GROUP = MONITORING_GROUP
    wait_until = staticmethod(wait_until)

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a cached binary (kubectl, helm, ...) against this cluster."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}:{os.environ['PATH']}",
        }
        env.setdefault("HELM_CACHE_HOME", str(self.log_dir.parent / "helm" / "cache"))
        env.setdefault("HELM_CONFIG_HOME", str(self.log_dir.parent / "helm" / "config"))
        env.setdefault("HELM_DATA_HOME", str(self.log_dir.parent / "helm" / "data"))
        proc = subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"{tool} {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, check=check)

    def api_group_present(self, group: str) -> bool:
        groups = client.ApisApi(self.api_client).get_api_versions().groups
        return any(g.name == group for g in groups)

    def apply_prometheus_operator_crds(self) -> None:
        """Apply the pinned prometheus-operator CRDs and wait until they are served."""
        for path in PROMETHEUS_OPERATOR_CRDS.values():
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{name}" for name in PROMETHEUS_OPERATOR_CRDS),
        )
        wait_until(f"{MONITORING_GROUP} in discovery", lambda: self.api_group_present(MONITORING_GROUP))

    def delete_prometheus_operator_crds(self) -> None:
        """Remove the CRDs again (their custom resources go with them) and wait until they are gone."""
        self.kubectl("delete", "crd", "--ignore-not-found", "--wait=true", *PROMETHEUS_OPERATOR_CRDS)
        wait_until(
            f"{MONITORING_GROUP} gone from discovery", lambda: not self.api_group_present(MONITORING_GROUP)
        )


@pytest.fixture(scope="session")
def testenv() -> Iterator[TestEnv]:
    script = _load_script()
    if not script.built():
        pytest.fail(
            "the test control plane is not built; run `scripts/testenv build` first "
            "(a cold build takes about half an hour on 2 cores; see docs/testenv.md)"
        )
    # Several pytest sessions may share one checkout (and so .testenv/): each registers itself
    # under users/, and an environment a session started is stopped by the last one out.
    users = script.STATE_DIR / "users"
    owned = script.STATE_DIR / script.PYTEST_OWNED
    if not script.healthy(script.load_state()):
        proc = subprocess.run([str(SCRIPT), "up"], check=False, capture_output=True, text=True, timeout=240)
        if proc.returncode != 0:
            pytest.fail(f"scripts/testenv up failed:\n{proc.stderr}\nlogs: {script.LOG_DIR}")
        if "reusing" not in proc.stderr:  # not started by a concurrent session after all
            owned.touch()
    state = script.load_state()
    assert state is not None
    users.mkdir(parents=True, exist_ok=True)
    me = users / str(os.getpid())
    me.touch()

    env = TestEnv(
        api_client=config.new_client_from_config(config_file=state["kubeconfig"]),
        kubeconfig=Path(state["kubeconfig"]),
        bin_dir=Path(state["bin_dir"]),
        server=state["server"],
        log_dir=script.LOG_DIR,
    )
    try:
        yield env
    finally:
        env.api_client.close()  # type: ignore[attr-defined]
        me.unlink(missing_ok=True)
        others = []
        for user in users.iterdir():
            if script.pid_alive(int(user.name)):
                others.append(user)
            else:
                user.unlink(missing_ok=True)  # a session that died without cleaning up
        if owned.exists() and not others and not os.environ.get("ESNODE_TESTENV_KEEP"):
            subprocess.run([str(SCRIPT), "down"], check=False, timeout=120)


@pytest.fixture
def namespace(testenv: TestEnv) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount ready), deleted after the test."""
    core = client.CoreV1Api(testenv.api_client)
    name = f"esnode-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_sa_exists() -> bool:
        return any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items)

    wait_until(f"ServiceAccount default in {name}", default_sa_exists)
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture
def prometheus_operator_crds(testenv: TestEnv) -> Iterator[TestEnv]:
    """The real ServiceMonitor and PrometheusRule CRDs (prometheus-operator, pinned), for one test."""
    testenv.apply_prometheus_operator_crds()
    try:
        yield testenv
    finally:
        testenv.delete_prometheus_operator_crds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failed k8s test, point at the component logs kept under .testenv/logs/."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("k8s"):
        log_dir = Path(os.environ.get("ESNODE_TESTENV_DIR", REPO / ".testenv")) / "logs"
        if log_dir.is_dir():
            listing = "\n".join(str(p) for p in sorted(log_dir.glob("*.log")))
            report.sections.append(("testenv component logs", listing))
