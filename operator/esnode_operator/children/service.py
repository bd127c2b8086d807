"""The headless Service in front of the agents' metrics port (one endpoint per node)."""

from __future__ import annotations

from typing import Any

from esnode_operator.api.fleet import Fleet, adopted
from esnode_operator.names import (
    AGENT_APP_NAME,
    LABEL_INSTANCE,
    LABEL_NAME,
    METRICS_PORT_NAME,
    child_name,
    fleet_labels,
)


def agent_pod_selector(fleet: Fleet) -> dict[str, str]:
    """Every agent pod of the fleet, whatever its envelope group."""
    return {LABEL_NAME: AGENT_APP_NAME, LABEL_INSTANCE: fleet.name}


def build_service(fleet: Fleet) -> dict[str, Any]:
    return adopted(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": child_name(fleet.name), "labels": fleet_labels(fleet.name)},
            "spec": {
                "clusterIP": "None",  # scrapers want each node's agent, not a load-balanced one
                "selector": agent_pod_selector(fleet),
                "ports": [
                    {
                        "name": METRICS_PORT_NAME,
                        "port": fleet.spec.port,
                        "targetPort": METRICS_PORT_NAME,
                        "protocol": "TCP",
                    }
                ],
            },
        },
        fleet,
    )
