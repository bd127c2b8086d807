"""Who may set the Node condition: fleets with spec.nodeCondition in the shared node-status binding.

Patching nodes/status is a cluster-wide right: the agents of such fleets are listed as subjects of
the ClusterRoleBinding esnode-agent-node-status (rbac/agents.yaml), see binding_subjects.py.
"""

from __future__ import annotations

from esnode_operator.kube import Kube
from esnode_operator.reconcile.binding_subjects import BindingPurpose, BindingSubjects

DEFAULT_NODE_STATUS_BINDING = "esnode-agent-node-status"
NODE_CONDITION = BindingPurpose(
    rights="node condition rights",
    wanted_when="spec.nodeCondition is true",
    meanwhile="the agents report without setting the Node condition",
)


class NodeStatusAccess(BindingSubjects):
    def __init__(self, kube: Kube, binding_name: str = DEFAULT_NODE_STATUS_BINDING) -> None:
        super().__init__(kube, binding_name, NODE_CONDITION)
