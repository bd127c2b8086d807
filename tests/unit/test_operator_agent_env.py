"""spec.env values the agent would refuse (it exits 2) are caught by the operator, naming the variable."""

from __future__ import annotations

from typing import Any

import pytest

from esnode_operator.api.models import FleetSpec
from esnode_operator.children.agent_config import AgentEnvError, check_agent_env


def spec(*env: dict[str, Any], **fields: Any) -> FleetSpec:
    return FleetSpec.model_validate({"env": list(env), **fields})


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ESNODE_SCRAPE_INTERVAL_SECONDS", "soon", "valid number"),
        ("ESNODE_LISTEN_ADDRESS", "nowhere", "expected HOST:PORT"),
        ("ESNODE_LOG_LEVEL", "loud", "'debug', 'info', 'warning' or 'error'"),
        ("esnode_enable_gpu", "maybe", "valid boolean"),  # the agent reads env case-insensitively
        ("ESNODE_NODE_POWER_ENVELOPE_WATTS", "-5", "greater than 0"),
    ],
)
def test_a_value_the_agent_refuses_is_named(name: str, value: str, says: str) -> None:
    with pytest.raises(AgentEnvError, match=rf"^spec.env {name}='{value}': .*{says}.*the agent would exit 2"):
        check_agent_env(spec({"name": name, "value": value}))


def test_env_is_checked_against_the_rendered_settings_not_alone() -> None:
    """A collector timeout longer than the fleet's scrape interval is fine alone, not with the fleet."""
    timeout = {"name": "ESNODE_COLLECTOR_TIMEOUT_SECONDS", "value": "20"}
    check_agent_env(spec(timeout, scrapeIntervalSeconds=30))
    with pytest.raises(AgentEnvError, match="ESNODE_COLLECTOR_TIMEOUT_SECONDS"):
        check_agent_env(spec(timeout, scrapeIntervalSeconds=5))


def test_values_the_agent_takes_and_variables_it_does_not_read_pass() -> None:
    check_agent_env(
        spec(
            {"name": "ESNODE_GPU_BACKEND", "value": "sim:h100x8"},
            {"name": "ESNODE_NODE_POWER_ENVELOPE_WATTS", "value": "4500"},
            {"name": "ESNODE_FLEET_ROLE", "value": "anything"},  # no such agent key: ignored by the agent too
            {
                "name": "ESNODE_LOG_LEVEL",
                "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
            },  # read on the node
            {"name": "HTTP_PROXY", "value": "not an agent key"},
        )
    )
