"""A real Prometheus server (Debian package `prometheus`) on loopback, in a temp dir."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from agent_process import free_port, running


@contextmanager
def prometheus(
    targets: list[str],
    workdir: Path,
    scrape_interval: str = "1s",
    metrics_path: str = "/metrics",
    job_options: str = "",
) -> Iterator[str]:
    """``job_options``: more YAML lines of the scrape job (scheme, tls_config...), indented 4."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is required (Debian package prometheus)"
    config = workdir / "prometheus.yml"
    target_list = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: esnode\n"
        f"    metrics_path: {metrics_path}\n"
        f"{job_options}"
        f"    static_configs: [{{targets: [{target_list}]}}]\n"
    )
    port = free_port()
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    with running(args, f"http://127.0.0.1:{port}/-/ready", workdir / "prometheus.log"):
        yield f"http://127.0.0.1:{port}"


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{promql}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_result(prometheus_url: str, promql: str, timeout_seconds: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_seconds
    result = query(prometheus_url, promql)
    while not result and time.monotonic() < deadline:
        time.sleep(1.0)
        result = query(prometheus_url, promql)
    return result
