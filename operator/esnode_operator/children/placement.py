"""Envelope groups: which nodes each of a fleet's DaemonSets covers.

An agent cannot read its own node's labels (it has no API rights), so a per-node power envelope
is decided by placement: the nodes an override selects run a DaemonSet of their own that sets the
override's watts, and the default DaemonSet excludes them. Overrides apply in order, first match
wins, so override i also excludes the nodes of overrides 0..i-1. Constraints are node-affinity
terms in disjunctive normal form (terms ORed, requirements in a term ANDed); "not (a and b)" is
"(not a) or (not b)", which node affinity expresses exactly for In/NotIn/Exists/DoesNotExist.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from esnode_operator.api.models import NodeLabelSelector, PowerEnvelope
from esnode_operator.names import DEFAULT_ENVELOPE_GROUP

Requirement = dict[str, Any]  # a NodeSelectorRequirement: key, operator, values
Term = tuple[Requirement, ...]

MAX_AFFINITY_TERMS = 64
_NEGATION = {"In": "NotIn", "NotIn": "In", "Exists": "DoesNotExist", "DoesNotExist": "Exists"}


class PlacementError(ValueError):
    """The envelope overrides cannot be expressed as node affinity of a sane size."""


@dataclass(frozen=True)
class EnvelopeGroup:
    group_id: str
    watts: float | None  # None: the default group, whose envelope comes from the ConfigMap
    terms: tuple[Term, ...] | None  # None: no constraint beyond the fleet's nodeSelector


def selector_requirements(selector: NodeLabelSelector) -> Term:
    labels = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(selector.match_labels.items())]
    expressions = [_requirement(r.key, r.operator, r.values) for r in selector.match_expressions]
    return tuple(labels + expressions)


def _requirement(key: str, operator: str, values: list[str]) -> Requirement:
    return (
        {"key": key, "operator": operator, "values": list(values)}
        if values
        else {"key": key, "operator": operator}
    )


def _negate(requirement: Requirement) -> Requirement:
    return _requirement(requirement["key"], _NEGATION[requirement["operator"]], requirement.get("values", []))


def _contradicts(term: Term) -> bool:
    """A term holding a requirement and its exact negation matches no node."""
    return any(_negate(requirement) in term for requirement in term)


def _unique(term: Term) -> Term:
    out: list[Requirement] = []
    for requirement in term:
        if requirement not in out:
            out.append(requirement)
    return tuple(out)


def _and(left: tuple[Term, ...], right: tuple[Term, ...]) -> tuple[Term, ...]:
    product = (_unique(a + b) for a in left for b in right)
    return tuple(term for term in product if not _contradicts(term))


def _not(term: Term) -> tuple[Term, ...]:
    return tuple((_negate(requirement),) for requirement in term)


def group_id(selector: NodeLabelSelector) -> str:
    canonical = json.dumps(selector.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:6]


def satisfiable(term: Term) -> bool:
    """Whether some node's labels can meet every requirement of the term (each key on its own)."""
    keys = {requirement["key"] for requirement in term}
    for key in keys:
        allowed: set[str] | None = None  # None: any value
        present = absent = False
        excluded: set[str] = set()
        for requirement in (r for r in term if r["key"] == key):
            operator, values = requirement["operator"], set(requirement.get("values", []))
            if operator == "In":
                allowed = values if allowed is None else allowed & values
            elif operator == "NotIn":
                excluded |= values
            elif operator == "Exists":
                present = True
            else:  # DoesNotExist
                absent = True
        if absent and (present or allowed is not None):
            return False
        if allowed is not None and not allowed - excluded:
            return False
    return True


def _never_matches(index: int, own: Term, base: Term, remaining: tuple[Term, ...]) -> str | None:
    where = f"spec.powerEnvelope.overrides[{index}].nodeSelector"
    if not satisfiable(own):
        return f"{where} contradicts itself: no node can carry labels that meet all of it"
    if not satisfiable(own + base):
        return f"{where} contradicts spec.nodeSelector: no node of this fleet can match it"
    if not _and(remaining, (own,)):
        return (
            f"{where} selects only nodes that earlier overrides take (first match wins): it would never apply"
        )
    return None


def envelope_groups(
    envelope: PowerEnvelope, node_selector: dict[str, str] | None = None
) -> list[EnvelopeGroup]:
    """The default group first, then one per override; raises PlacementError for an override that
    could never apply (it contradicts itself or the fleet's nodeSelector, or earlier overrides take
    all its nodes), rather than leaving it silently without a DaemonSet."""
    if not envelope.overrides:
        return [EnvelopeGroup(DEFAULT_ENVELOPE_GROUP, None, None)]
    base = tuple(
        {"key": k, "operator": "In", "values": [v]} for k, v in sorted((node_selector or {}).items())
    )
    groups: list[EnvelopeGroup] = []
    remaining: tuple[Term, ...] = ((),)  # nodes no earlier override took: initially all
    for index, override in enumerate(envelope.overrides):
        own = selector_requirements(override.node_selector)
        problem = _never_matches(index, own, base, remaining)
        if problem is not None:
            raise PlacementError(problem)
        terms = _and(remaining, (own,))
        gid = group_id(override.node_selector)
        if all(group.group_id != gid for group in groups):
            groups.append(EnvelopeGroup(gid, override.watts, _bounded(terms)))
        remaining = _bounded(_and(remaining, _not(own)))
    default = [EnvelopeGroup(DEFAULT_ENVELOPE_GROUP, None, remaining)] if remaining else []
    return default + groups


def _bounded(terms: tuple[Term, ...]) -> tuple[Term, ...]:
    if len(terms) > MAX_AFFINITY_TERMS:
        raise PlacementError(
            f"powerEnvelope.overrides need {len(terms)} node-affinity terms (at most {MAX_AFFINITY_TERMS}); "
            "use fewer labels per override selector, or a single label whose values tell the groups apart"
        )
    return terms


def merged_affinity(affinity: dict[str, Any] | None, terms: tuple[Term, ...] | None) -> dict[str, Any] | None:
    """The pod affinity with the group's terms ANDed into its required node-affinity terms."""
    if terms is None:
        return copy.deepcopy(affinity) if affinity else None
    merged = copy.deepcopy(affinity) if affinity else {}
    node_affinity = merged.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    user_terms = required.get("nodeSelectorTerms") or [{}]
    combined = []
    for user_term in user_terms:
        for term in terms:
            new_term = dict(user_term)
            new_term["matchExpressions"] = [*user_term.get("matchExpressions", []), *copy.deepcopy(term)]
            combined.append(new_term)
    if len(combined) > MAX_AFFINITY_TERMS:
        raise PlacementError(
            f"spec.affinity's nodeSelectorTerms times the envelope groups' terms make {len(combined)} "
            f"terms (at most {MAX_AFFINITY_TERMS})"
        )
    required["nodeSelectorTerms"] = combined
    return merged
