"""metrics_auth = kubernetes on the real control plane: TokenReview and SubjectAccessReview decide.

A real agent process reviews with the token of its own ServiceAccount, which holds only the
built-in system:auth-delegator role (tokenreviews and subjectaccessreviews create), as
rbac/agents.yaml grants it. Scrapers present their ServiceAccounts' tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kwok_pod_processes import token_kubeconfig
from test_node_reports import agent_process

pytestmark = pytest.mark.k8s

Env = Any  # conftest.TestEnv


def _grants(namespace: str) -> list[dict[str, Any]]:
    def binding(name: str, role: str, account: str) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{namespace}-{name}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }

    reader = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"{namespace}-metrics-reader"},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
    }
    accounts = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n, "namespace": namespace}}
        for n in ("esnode-agent", "prometheus", "stranger")
    ]
    return [
        *accounts,
        reader,
        binding("agent-reviews", "system:auth-delegator", "esnode-agent"),
        binding("prometheus-metrics", f"{namespace}-metrics-reader", "prometheus"),
    ]


@pytest.fixture
def guarded_agent(testenv: Env, namespace: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    documents = _grants(namespace)
    try:  # the cluster-scoped grants go even when setting up fails half-way
        testenv.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
        tokens = {
            account: testenv.kubectl(
                "create", "token", account, "-n", namespace, "--duration=1h"
            ).stdout.strip()
            for account in ("esnode-agent", "prometheus", "stranger")
        }
        kubeconfig = token_kubeconfig(
            testenv.kubeconfig, tokens["esnode-agent"], tmp_path / "agent.kubeconfig"
        )
        with agent_process.agent(
            "--kubeconfig", str(kubeconfig), "--metrics-auth", "kubernetes",
            "--gpu-backend", "sim:h100x8", "--scrape-interval", "1",
            log_path=tmp_path / "agent.log",
        ) as url:  # fmt: skip
            yield url, tokens
    finally:
        cluster_scoped = [f"{d['kind'].lower()}/{d['metadata']['name']}" for d in documents[3:]]
        testenv.kubectl("delete", "--ignore-not-found", *cluster_scoped, check=False)


def test_tokens_are_reviewed_by_the_api_server(guarded_agent: tuple[str, dict[str, str]]) -> None:
    url, tokens = guarded_agent

    def get(path: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(url + path, headers=headers, timeout=10)

    allowed = get("/metrics", tokens["prometheus"])
    assert allowed.status_code == 200, allowed.text
    assert "esnode_gpu_power_watts" in allowed.text
    assert get("/metrics", tokens["prometheus"]).status_code == 200  # from the cache, same answer
    assert get("/metrics", tokens["stranger"]).status_code == 403
    assert get("/status", tokens["prometheus"]).status_code == 403  # the role names /metrics only
    missing = get("/metrics", None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert get("/metrics", "not-a-token").status_code == 401
    assert get("/readyz", None).status_code == 200  # kubelet probes carry no token
