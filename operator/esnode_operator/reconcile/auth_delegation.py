"""Who may review tokens: fleets with spec.metricsAuth kubernetes in the shared auth-delegator binding.

Their agents create TokenReviews and SubjectAccessReviews for each scraper's token, which the
built-in ClusterRole system:auth-delegator grants, cluster-wide: they are listed as subjects of the
ClusterRoleBinding esnode-agent-auth-delegator (rbac/agents.yaml), see binding_subjects.py.
"""

from __future__ import annotations

from esnode_operator.kube import Kube
from esnode_operator.reconcile.binding_subjects import BindingPurpose, BindingSubjects

DEFAULT_AUTH_DELEGATOR_BINDING = "esnode-agent-auth-delegator"
TOKEN_REVIEWS = BindingPurpose(
    rights="token review rights",
    wanted_when="spec.metricsAuth is kubernetes",
    meanwhile="the agents cannot review tokens and answer every scrape 401",
)


class AuthDelegation(BindingSubjects):
    def __init__(self, kube: Kube, binding_name: str = DEFAULT_AUTH_DELEGATOR_BINDING) -> None:
        super().__init__(kube, binding_name, TOKEN_REVIEWS)
