"""Everything a fleet owns, built together so the config hash on the pods matches the ConfigMap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esnode_operator.api.fleet import Fleet
from esnode_operator.children.agent_config import check_agent_env
from esnode_operator.children.agent_rbac import build_agent_role, build_agent_rolebinding
from esnode_operator.children.configmap import build_configmap, config_hash
from esnode_operator.children.daemonset import build_daemonsets
from esnode_operator.children.service import build_service
from esnode_operator.children.serviceaccount import build_serviceaccount
from esnode_operator.children.servicemonitor import build_servicemonitor


@dataclass(frozen=True)
class Children:
    configmap: dict[str, Any]
    serviceaccount: dict[str, Any]
    role: dict[str, Any]
    rolebinding: dict[str, Any]
    service: dict[str, Any]
    daemonsets: list[dict[str, Any]]
    servicemonitor: dict[str, Any] | None  # None: spec.serviceMonitor.enabled is false

    @property
    def core(self) -> list[dict[str, Any]]:
        """In apply order: what the DaemonSets reference comes first."""
        return [
            self.configmap,
            self.serviceaccount,
            self.role,
            self.rolebinding,
            self.service,
            *self.daemonsets,
        ]


def desired_children(fleet: Fleet) -> Children:
    """Raises PlacementError when the envelope overrides cannot be placed, AgentEnvError when spec.env
    sets an agent key to a value the agent refuses."""
    check_agent_env(fleet.spec)
    configmap = build_configmap(fleet)
    return Children(
        configmap=configmap,
        serviceaccount=build_serviceaccount(fleet),
        role=build_agent_role(fleet),
        rolebinding=build_agent_rolebinding(fleet),
        service=build_service(fleet),
        daemonsets=build_daemonsets(fleet, config_hash(configmap)),
        servicemonitor=build_servicemonitor(fleet) if fleet.spec.service_monitor.enabled else None,
    )
