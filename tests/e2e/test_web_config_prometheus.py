"""exporter-toolkit's web config on the agent: real Prometheus scrapes over TLS with basic auth and
over mutual TLS; a wrong password or a missing client certificate is refused; others still served."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest
from agent_process import clean_env, free_port, running
from prometheus_process import prometheus, wait_for_result
from tls_material import TlsMaterial, make_tls_material

pytestmark = pytest.mark.e2e

PASSWORD = "s3cret-scrape"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


def _agent_with(web_config: str, tmp_path: Path, **ready_request: object) -> Iterator[str]:
    path = tmp_path / "web.yml"
    path.write_text(web_config)
    port = free_port()
    args = [sys.executable, "-m", "esnode_agent", f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={path}", "--scrape-interval=1", "--gpu-backend=sim:h100x8"]  # fmt: skip
    log = tmp_path / "agent.log"
    with running(args, f"https://127.0.0.1:{port}/readyz", log, clean_env(), **ready_request):
        yield f"127.0.0.1:{port}"


def _client_context(tls: TlsMaterial) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


@pytest.fixture
def basic_auth_agent(tls: TlsMaterial, tmp_path: Path) -> Iterator[str]:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    yield from _agent_with(
        f"tls_server_config:\n  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
        tmp_path,
        verify=ssl.create_default_context(cafile=str(tls.ca_cert)),
        auth=("prometheus", PASSWORD),
    )


@pytest.fixture
def mtls_agent(tls: TlsMaterial, tmp_path: Path) -> Iterator[str]:
    yield from _agent_with(
        f"tls_server_config:\n  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {tls.ca_cert}\n",
        tmp_path,
        verify=_client_context(tls),
    )


def test_prometheus_scrapes_over_tls_with_basic_auth_and_a_wrong_password_is_refused(
    basic_auth_agent: str, tls: TlsMaterial, tmp_path: Path
) -> None:
    verify = ssl.create_default_context(cafile=str(tls.ca_cert))
    assert httpx.get(f"https://{basic_auth_agent}/metrics", verify=verify, timeout=5).status_code == 401
    wrong = httpx.get(
        f"https://{basic_auth_agent}/events", verify=verify, auth=("prometheus", "nope"), timeout=5
    )
    assert wrong.status_code == 401
    ok = httpx.get(
        f"https://{basic_auth_agent}/status", verify=verify, auth=("prometheus", PASSWORD), timeout=5
    )
    assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
    job = (
        "    scheme: https\n"
        f"    tls_config: {{ca_file: {tls.ca_cert}}}\n"
        f"    basic_auth: {{username: prometheus, password: {PASSWORD}}}\n"
    )
    with prometheus([basic_auth_agent], tmp_path, job_options=job) as url:
        assert wait_for_result(url, 'up{job="esnode"} == 1')
        assert wait_for_result(url, "esnode_gpu_power_watts")


def test_prometheus_scrapes_over_mutual_tls_and_a_client_without_a_certificate_is_refused(
    mtls_agent: str, tls: TlsMaterial, tmp_path: Path
) -> None:
    with_cert = _client_context(tls)
    without = ssl.create_default_context(cafile=str(tls.ca_cert))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"https://{mtls_agent}/metrics", verify=without, timeout=5).raise_for_status()
    assert httpx.get(f"https://{mtls_agent}/metrics", verify=with_cert, timeout=5).status_code == 200
    job = (
        "    scheme: https\n"
        f"    tls_config: {{ca_file: {tls.ca_cert}, cert_file: {tls.client_cert}, key_file: {tls.client_key}}}\n"
    )
    with prometheus([mtls_agent], tmp_path, job_options=job) as url:
        assert wait_for_result(url, 'up{job="esnode"} == 1')
