"""Names the operator and its users share: API coordinates, labels, child object names."""

from __future__ import annotations

from esnode_agent.report.model import ESNODE_NODE_KIND, ESNODE_NODE_PLURAL

GROUP = "esnode.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "EsnodeFleet"
PLURAL = "esnodefleets"
SINGULAR = "esnodefleet"
SHORT_NAMES = ("esf",)
# The agents' node reports; the agent owns the kind's name (it writes the objects).
NODE_KIND = ESNODE_NODE_KIND
NODE_PLURAL = ESNODE_NODE_PLURAL
NODE_SINGULAR = NODE_KIND.lower()
NODE_SHORT_NAMES = ("esn",)

FIELD_MANAGER = "esnode-operator"
# The fleet power summary is applied under a manager of its own, so that it and the reconciler
# each own their own status fields and conditions (server-side apply merges them by type).
POWER_FIELD_MANAGER = "esnode-operator-power"

# Fleet names are bounded so that every child name stays a valid DNS label (63 characters).
MAX_FLEET_NAME_LENGTH = 40

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_ENVELOPE_GROUP = f"{GROUP}/envelope-group"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"

AGENT_APP_NAME = "esnode-agent"
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
