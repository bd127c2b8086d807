"""Names the operator and its users share: API coordinates, labels, child object names."""

from __future__ import annotations

from esnode_agent.api import (
    AGENT_APP_NAME,
    API_VERSION,
    FLEET_KIND,
    FLEET_PLURAL,
    GROUP,
    LABEL_MANAGED_BY,
    NODE_KIND,
    NODE_PLURAL,
    VERSION,
)

__all__ = [
    "AGENT_APP_NAME",
    "API_VERSION",
    "GROUP",
    "LABEL_MANAGED_BY",
    "NODE_KIND",
    "NODE_PLURAL",
    "VERSION",
]

KIND = FLEET_KIND
PLURAL = FLEET_PLURAL
SINGULAR = PLURAL.removesuffix("s")
SHORT_NAMES = ("esf",)
NODE_SINGULAR = NODE_KIND.lower()
NODE_SHORT_NAMES = ("esn",)

FIELD_MANAGER = "esnode-operator"
# The fleet power summary is applied under a manager of its own, so that it and the reconciler
# each own their own status fields and conditions (server-side apply merges them by type).
POWER_FIELD_MANAGER = "esnode-operator-power"

# Fleet names are bounded so that every child name stays a valid DNS label (63 characters).
MAX_FLEET_NAME_LENGTH = 40
# A fleet so named would get the operator's own account name (esnode-operator; its uninstall hook's
# with a suffix) for its agents, which the admission policies trust as the operator.
RESERVED_FLEET_NAME = "operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_ENVELOPE_GROUP = f"{GROUP}/envelope-group"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"

DEFAULT_ENVELOPE_GROUP = "default"

CONFIG_FILE_NAME = "esnode.toml"
CONFIG_MOUNT_PATH = "/etc/esnode"
METRICS_PORT_NAME = "metrics"
AGENT_CONTAINER_NAME = "agent"


def child_name(fleet_name: str) -> str:
    """Service, ServiceAccount, ServiceMonitor and the default DaemonSet of a fleet."""
    return f"esnode-{fleet_name}"


def configmap_name(fleet_name: str) -> str:
    return f"esnode-{fleet_name}-config"


def daemonset_name(fleet_name: str, envelope_group: str) -> str:
    if envelope_group == DEFAULT_ENVELOPE_GROUP:
        return child_name(fleet_name)
    return f"esnode-{fleet_name}-{envelope_group}"


def fleet_labels(fleet_name: str) -> dict[str, str]:
    """Labels every child carries; the operator's watches and the Service select on them."""
    return {
        LABEL_NAME: AGENT_APP_NAME,
        LABEL_INSTANCE: fleet_name,
        LABEL_MANAGED_BY: FIELD_MANAGER,
    }


def fleet_selector(fleet_name: str) -> str:
    """The label selector (string form) matching every child and agent pod of a fleet."""
    return f"{LABEL_NAME}={AGENT_APP_NAME},{LABEL_INSTANCE}={fleet_name}"
