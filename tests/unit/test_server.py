"""HTTP surface: cached bytes by content negotiation, health and readiness, JSON status."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest
from starlette.testclient import TestClient

from esnode_agent.cycle.samples import SampleIndex, SampleSink, gauge
from esnode_agent.cycle.snapshot import CollectorHealth, Snapshot
from esnode_agent.serve.app import create_app
from esnode_agent.serve.publication import Latest

MEMORY_TOTAL = gauge("esnode_memory_total_bytes", "Total memory.")


def _snapshot(sequence: int = 1) -> Snapshot:
    sink = SampleSink(0.0)
    sink.add(MEMORY_TOTAL, 8 * 2**30)
    return Snapshot(
        sequence, 1_700_000_000.0, 0.01, SampleIndex(sink.samples), (CollectorHealth("memory", True, 0.001),)
    )


@pytest.fixture
def latest() -> Latest:
    return Latest()


def _client(latest: Latest, alive: bool = True) -> TestClient:
    return TestClient(create_app(latest, lambda: alive))


def test_before_the_first_cycle_metrics_and_readyz_are_503_but_healthz_is_ok(latest: Latest) -> None:
    client = _client(latest)
    assert client.get("/metrics").status_code == 503
    assert client.get("/readyz").status_code == 503
    assert client.get("/status").status_code == 503
    assert client.get("/healthz").status_code == 200


async def test_metrics_negotiates_format_and_encoding(latest: Latest) -> None:
    await latest.publish(_snapshot())
    client = _client(latest)

    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "content-encoding" not in plain.headers
    assert b"esnode_memory_total_bytes 8589934592.0\n" in plain.content

    zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # the client inflated the cached gzip copy

    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.content.endswith(b"# EOF\n")


async def test_status_reports_collectors_and_data_age(latest: Latest) -> None:
    await latest.publish(_snapshot())
    body = _client(latest).get("/v1/status").json()
    assert body["sequence"] == 1
    assert body["collectors"]["memory"]["success"] is True
    assert body["host"]["memory"]["total_bytes"] == 8 * 2**30
    assert body["data_age_seconds"] > 0


async def test_a_stalled_loop_fails_health_and_readiness(latest: Latest) -> None:
    await latest.publish(_snapshot())
    client = _client(latest, alive=False)
    assert client.get("/healthz").status_code == 503
    assert client.get("/readyz").status_code == 503


def test_landing_page_links_every_endpoint(latest: Latest) -> None:
    page = _client(latest).get("/").text
    for path in ("/metrics", "/status", "/v1/status", "/events", "/healthz", "/readyz"):
        assert f'href="{path}"' in page


def test_every_response_carries_a_current_date_header(latest: Latest) -> None:
    response = _client(latest).get("/healthz")
    sent = parsedate_to_datetime(response.headers["date"]).timestamp()
    assert abs(sent - time.time()) < 2


async def test_q_zero_refuses_a_format_or_a_coding(latest: Latest) -> None:
    await latest.publish(_snapshot())
    client = _client(latest)
    no_gzip = client.get("/metrics", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in no_gzip.headers
    no_openmetrics = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0;q=0,text/plain;q=0.5"}
    )
    assert no_openmetrics.headers["content-type"].startswith("text/plain; version=0.0.4")


async def test_a_trailing_slash_is_not_redirected_to_the_callers_host(latest: Latest) -> None:
    await latest.publish(_snapshot())
    response = _client(latest).get("/metrics/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
