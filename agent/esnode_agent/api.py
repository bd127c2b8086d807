"""The Kubernetes API names the agent and the operator must spell alike: group, version, kinds,
plurals and the labels that tie objects to a fleet. The agent writes EsnodeNode objects, so it owns
them; the operator imports them from here.
"""

from __future__ import annotations

GROUP = "esnode.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

FLEET_KIND = "EsnodeFleet"
FLEET_PLURAL = "esnodefleets"
NODE_KIND = "EsnodeNode"
NODE_PLURAL = "esnodenodes"

FLEET_LABEL = f"{GROUP}/fleet"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
AGENT_APP_NAME = "esnode-agent"
