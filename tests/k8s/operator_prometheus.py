"""Prometheus, run with the configuration Prometheus Operator generated, on loopback.

The binary is the pinned build from scripts/testenv (tests/testenv/prometheus): Debian's package
is built without Kubernetes service discovery.

This plays the part of the StatefulSet pod's config-reloader: it reads the operator's Secret
`prometheus-<name>` (prometheus.yaml.gz) and rule ConfigMaps `prometheus-<name>-rulefiles-N`,
writes them where the config says (under a temp dir instead of /etc/prometheus), expands
$(POD_NAME) and $(SHARD) as the reloader does, and reloads Prometheus when they change. It plays
the kubelet's part too: the TLS assets Secrets (`prometheus-<name>-tls-assets-N`, mounted at
/etc/prometheus/certs) are written out, and the pod's ServiceAccount token (what `bearerTokenFile`
names) is a token of the Prometheus' serviceAccountName. Beyond those paths, the only edit to the
configuration is how Prometheus reaches the apiserver: each kubernetes_sd_configs block gets the
test kubeconfig (in a pod it would use the in-cluster service address, 10.0.0.1 here).
Before Prometheus starts, and on every sync, loopback_guard refuses non-loopback addresses.
"""

from __future__ import annotations

import base64
import gzip
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import child_process
import httpx
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from loopback_guard import NotLoopbackError, require_loopback

POD_RULES_DIR = "/etc/prometheus/rules/"
POD_CERTS_DIR = "/etc/prometheus/certs/"
POD_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
TOKEN_SECONDS = 3600
SYNC_SECONDS = 0.5
STARTUP_TIMEOUT_SECONDS = 60.0


def rewrite_config(
    text: str, kubeconfig: Path, rules_dir: Path, pod_name: str, pod_files: dict[str, Path] | None = None
) -> str:
    """The operator's config, with the apiserver reached through `kubeconfig` and rule files local.

    $(VAR)s are expanded as the config-reloader does from its env (one shard: SHARD is 0);
    `pod_files` maps pod paths (a folder ends in /) to where they are here."""
    for variable, value in {"POD_NAME": pod_name, "SHARD": "0"}.items():
        text = text.replace(f"$({variable})", value)
    for pod_path, here in (pod_files or {}).items():
        text = text.replace(pod_path, f"{here}/" if pod_path.endswith("/") else str(here))
    config = yaml.safe_load(text)
    for scrape in config.get("scrape_configs") or []:
        for sd in scrape.get("kubernetes_sd_configs") or []:
            sd["kubeconfig_file"] = str(kubeconfig)
    config["rule_files"] = [
        str(rules_dir / path.removeprefix(POD_RULES_DIR)) if path.startswith(POD_RULES_DIR) else path
        for path in config.get("rule_files") or []
    ]
    return str(yaml.safe_dump(config, sort_keys=False))


class OperatorPrometheus:
    """Prometheus for the `Prometheus` object namespace/name, kept in step with the operator's output."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        *,
        binary: Path,
        kubeconfig: Path,
        workdir: Path,
        port: int,
    ) -> None:
        self.binary = binary
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.namespace, self.name = namespace, name
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.config_path = workdir / "prometheus.yaml"
        self.rules_dir = workdir / "rules"
        self.certs_dir = workdir / "certs"
        self.token_file = workdir / "serviceaccount-token"
        self.reloads = 0
        self.failure: str | None = None  # why the syncing thread stopped Prometheus
        self._process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sync_loop, daemon=True)

    # ------------------------------------------------------------------ the operator's output

    def _generated(self) -> str | None:
        try:
            secret = self.core.read_namespaced_secret(f"prometheus-{self.name}", self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = (secret.data or {}).get("prometheus.yaml.gz")
        return gzip.decompress(base64.b64decode(data)).decode() if data else None

    def _rule_files(self) -> dict[str, dict[str, str]]:
        """ConfigMap name -> its files, for every rule ConfigMap the operator wrote."""
        found: dict[str, dict[str, str]] = {}
        for index in range(16):
            name = f"prometheus-{self.name}-rulefiles-{index}"
            try:
                configmap = self.core.read_namespaced_config_map(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    break
                raise
            found[name] = dict(configmap.data or {})
        return found

    def sync(self) -> bool:
        """Write what the operator generated; True when it changed anything."""
        generated = self._generated()
        if generated is None:
            return False
        changed = self._write_rules(self._rule_files())
        changed = self._write_tls_assets() or changed
        pod_files = {POD_CERTS_DIR: self.certs_dir, POD_TOKEN_FILE: self.token_file}
        config = rewrite_config(
            generated, self.kubeconfig, self.rules_dir, f"prometheus-{self.name}-0", pod_files
        )
        if not self.config_path.exists() or self.config_path.read_text() != config:
            self.config_path.write_text(config)
            changed = True
        return changed

    def _write_rules(self, configmaps: dict[str, dict[str, str]]) -> bool:
        wanted = {f"{cm}/{file}": text for cm, files in configmaps.items() for file, text in files.items()}
        present = {str(p.relative_to(self.rules_dir)): p.read_text() for p in self.rules_dir.glob("*/*")}
        if wanted == present:
            return False
        shutil.rmtree(self.rules_dir, ignore_errors=True)
        for relative, text in wanted.items():
            path = self.rules_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return True

    def _write_tls_assets(self) -> bool:
        wanted: dict[str, bytes] = {}
        for index in range(16):
            try:
                secret = self.core.read_namespaced_secret(
                    f"prometheus-{self.name}-tls-assets-{index}", self.namespace
                )
            except ApiException as exc:
                if exc.status == 404:
                    break
                raise
            wanted.update({key: base64.b64decode(value) for key, value in (secret.data or {}).items()})
        present = {p.name: p.read_bytes() for p in self.certs_dir.glob("*")}
        if wanted == present:
            return False
        shutil.rmtree(self.certs_dir, ignore_errors=True)
        self.certs_dir.mkdir()
        for name, data in wanted.items():
            (self.certs_dir / name).write_bytes(data)
        return True

    def _write_token(self) -> None:
        """A token of the Prometheus' ServiceAccount, as the kubelet projects it into the pod."""
        prometheus = client.CustomObjectsApi(self.api_client).get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", self.namespace, "prometheuses", self.name
        )
        account = prometheus["spec"].get("serviceAccountName") or "default"  # type: ignore[index]
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
        )
        token = self.core.create_namespaced_service_account_token(
            account, self.namespace, request
        ).status.token
        self.token_file.write_text(token)

    # ------------------------------------------------------------------ the server

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rules_dir.mkdir(exist_ok=True)
        self.certs_dir.mkdir(exist_ok=True)
        self._write_token()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self.sync():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no config from Prometheus Operator for {self.namespace}/{self.name}")
            time.sleep(SYNC_SECONDS)
        require_loopback(self.api_client)  # before Prometheus discovers anything
        args = [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        self._process = child_process.start(args, self.workdir / "prometheus.log")
        child_process.wait_ok(self._process, f"{self.url}/-/ready", max(1.0, deadline - time.monotonic()))
        self._thread.start()

    def _sync_loop(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            try:
                require_loopback(self.api_client)
                if self.sync():
                    httpx.post(f"{self.url}/-/reload", timeout=10).raise_for_status()
                    self.reloads += 1
            except NotLoopbackError as exc:
                self.failure = str(exc)
                self._terminate()
                return
            except (ApiException, httpx.HTTPError, OSError):
                continue  # the next round retries, as the reloader would

    def _terminate(self) -> None:
        if self._process is not None:
            child_process.stop(self._process)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._terminate()

    # ------------------------------------------------------------------ reading it

    def api(self, path: str, **params: str) -> Any:
        assert self.failure is None, self.failure
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=promql)["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def loaded_config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.api("status/config")["yaml"])
        return loaded


@contextmanager
def operator_prometheus(
    api_client: Any, namespace: str, name: str, *, binary: Path, kubeconfig: Path, workdir: Path, port: int
) -> Iterator[OperatorPrometheus]:
    prometheus = OperatorPrometheus(
        api_client, namespace, name, binary=binary, kubeconfig=kubeconfig, workdir=workdir, port=port
    )
    try:
        prometheus.start()
        yield prometheus
    finally:
        prometheus.stop()
