"""Prometheus 3 with its OTLP receiver on, on loopback, in a temp dir.

The binary is the pinned build of scripts/testenv (tests/testenv/prometheus, Prometheus 3.5):
Debian's Prometheus 2.42 has no OTLP receiver that takes this configuration.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from agent_process import free_port, running

TESTENV_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "testenv"


def prometheus3_binary() -> Path:
    loader = importlib.machinery.SourceFileLoader("esnode_testenv", str(TESTENV_SCRIPT))
    spec = importlib.util.spec_from_loader("esnode_testenv", loader)
    assert spec is not None
    testenv = importlib.util.module_from_spec(spec)
    loader.exec_module(testenv)
    binary = Path(testenv.bin_dir()) / "prometheus"
    if not binary.exists():
        pytest.fail(f"{binary} is not built; run `scripts/testenv build` (scripts/test does)")
    return binary


@contextmanager
def otlp_prometheus(
    workdir: Path, promote: tuple[str, ...] = (), web_config: str | None = None, **ready_request: Any
) -> Iterator[str]:
    """Yields the base URL; OTLP metrics go to <url>/api/v1/otlp/v1/metrics. ``web_config``: its
    exporter-toolkit web config (TLS), with ``ready_request`` what the readiness check needs."""
    config = workdir / "prometheus.yml"
    promoted = ", ".join(promote)
    config.write_text(
        "otlp:\n"
        "  translation_strategy: UnderscoreEscapingWithSuffixes\n"
        f"  promote_resource_attributes: [{promoted}]\n"
    )
    port = free_port()
    args = [
        str(prometheus3_binary()),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-otlp-receiver",
    ]
    scheme = "http"
    if web_config is not None:
        (workdir / "web.yml").write_text(web_config)
        args.append(f"--web.config.file={workdir / 'web.yml'}")
        scheme = "https"
    url = f"{scheme}://127.0.0.1:{port}"
    with running(args, f"{url}/-/ready", workdir / "prometheus.log", **ready_request):
        yield url
