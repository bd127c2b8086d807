"""Envelope groups: every node lands in exactly one DaemonSet, the one its first matching override names."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from pydantic import ValidationError

from esnode_operator.api.models import NodeLabelSelector, PowerEnvelope
from esnode_operator.children.placement import (
    MAX_AFFINITY_TERMS,
    EnvelopeGroup,
    PlacementError,
    envelope_groups,
    merged_affinity,
)
from esnode_operator.names import DEFAULT_ENVELOPE_GROUP

Labels = dict[str, str]


def requirement_holds(requirement: dict[str, Any], labels: Labels) -> bool:
    """Kubernetes' node-affinity semantics (NotIn and DoesNotExist hold where the label is absent)."""
    key, operator = requirement["key"], requirement["operator"]
    values = requirement.get("values", [])
    return {
        "In": lambda: labels.get(key) in values,
        "NotIn": lambda: key not in labels or labels[key] not in values,
        "Exists": lambda: key in labels,
        "DoesNotExist": lambda: key not in labels,
    }[operator]()


def affinity_admits(affinity: dict[str, Any] | None, labels: Labels) -> bool:
    if not affinity:
        return True
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return any(
        term.get("matchExpressions") and all(requirement_holds(r, labels) for r in term["matchExpressions"])
        for term in terms
    )


def selector_matches(selector: NodeLabelSelector, labels: Labels) -> bool:
    return all(labels.get(k) == v for k, v in selector.match_labels.items()) and all(
        requirement_holds(r.model_dump(), labels) for r in selector.match_expressions
    )


def expected_watts(envelope: PowerEnvelope, labels: Labels) -> float | None:
    for override in envelope.overrides:
        if selector_matches(override.node_selector, labels):
            return override.watts
    return None  # the default group


def groups_admitting(groups: list[EnvelopeGroup], labels: Labels) -> list[EnvelopeGroup]:
    return [g for g in groups if affinity_admits(merged_affinity(None, g.terms), labels)]


def envelope(*overrides: tuple[dict[str, Any], float]) -> PowerEnvelope:
    return PowerEnvelope.model_validate(
        {"defaultWatts": 500, "overrides": [{"nodeSelector": s, "watts": w} for s, w in overrides]}
    )


def test_without_overrides_one_unconstrained_group() -> None:
    assert envelope_groups(PowerEnvelope()) == [EnvelopeGroup(DEFAULT_ENVELOPE_GROUP, None, None)]


NODES: list[Labels] = [
    {},
    {"type": "dgx"},
    {"type": "dgx", "zone": "a"},
    {"type": "hgx", "zone": "a"},
    {"zone": "b"},
    {"type": "dgx", "zone": "b", "gpu": "h100"},
    {"gpu": "a100"},
]


def _random_selector(rng: random.Random) -> dict[str, Any]:
    keys, values = ["type", "zone", "gpu"], ["dgx", "hgx", "a", "b", "h100", "a100"]
    selector: dict[str, Any] = {"matchLabels": {}, "matchExpressions": []}
    for key in rng.sample(keys, rng.randint(1, 2)):
        operator = rng.choice(["label", "In", "NotIn", "Exists", "DoesNotExist"])
        if operator == "label":
            selector["matchLabels"][key] = rng.choice(values)
        elif operator in ("In", "NotIn"):
            selector["matchExpressions"].append(
                {"key": key, "operator": operator, "values": rng.sample(values, 2)}
            )
        else:
            selector["matchExpressions"].append({"key": key, "operator": operator})
    return selector


@pytest.mark.parametrize("seed", range(40))
def test_each_node_is_in_exactly_the_group_of_its_first_matching_override(seed: int) -> None:
    rng = random.Random(seed)
    selectors: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 4)):
        selector = _random_selector(rng)
        if selector not in selectors:  # a repeated selector is refused (below)
            selectors.append(selector)
    spec = envelope(*((selector, float(100 * (i + 1))) for i, selector in enumerate(selectors)))
    try:
        groups = envelope_groups(spec)
    except PlacementError as exc:  # an override that can never apply: it applies on none of NODES
        index = int(str(exc).split("overrides[", 1)[1].split("]", 1)[0])
        assert all(expected_watts(spec, labels) != spec.overrides[index].watts for labels in NODES), str(exc)
        return
    for labels in NODES:
        admitting = groups_admitting(groups, labels)
        assert len(admitting) == 1, (labels, admitting)
        assert admitting[0].watts == expected_watts(spec, labels), labels


def test_a_shadowed_override_is_refused_not_silently_dropped() -> None:
    shadowed = envelope(
        ({"matchLabels": {"type": "dgx"}}, 6500), ({"matchLabels": {"type": "dgx", "zone": "a"}}, 9000)
    )
    with pytest.raises(PlacementError, match=r"overrides\[1\].nodeSelector selects only nodes that earlier"):
        envelope_groups(shadowed)


@pytest.mark.parametrize(
    ("selector", "base", "says"),
    [
        ({"matchLabels": {"type": "dgx"}, "matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["dgx"]}]}, {}, "contradicts itself"),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}, {"key": "zone", "operator": "In", "values": ["b"]}]}, {}, "contradicts itself"),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}, {"key": "zone", "operator": "DoesNotExist"}]}, {}, "contradicts itself"),
        ({"matchLabels": {"gpu": "false"}}, {"gpu": "true"}, "contradicts spec.nodeSelector"),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "true"}, "contradicts spec.nodeSelector"),
    ],
)  # fmt: skip
def test_an_override_that_can_match_no_node_of_the_fleet_is_refused(
    selector: dict[str, Any], base: dict[str, str], says: str
) -> None:
    with pytest.raises(PlacementError, match=rf"overrides\[0\].nodeSelector {says}"):
        envelope_groups(envelope((selector, 900)), base)


def test_an_override_narrowing_the_fleets_selector_is_fine() -> None:
    groups = envelope_groups(
        envelope(({"matchLabels": {"gpu": "true", "type": "dgx"}}, 900)), {"gpu": "true"}
    )
    assert [g.watts for g in groups] == [None, 900]


def test_duplicate_selectors_are_refused_not_silently_dropped() -> None:
    with pytest.raises(ValidationError, match="two overrides have the same nodeSelector"):
        envelope(({"matchLabels": {"type": "dgx"}}, 6500), ({"matchLabels": {"type": "dgx"}}, 1))


def test_user_affinity_is_kept_and_anded_with_the_group() -> None:
    user: dict[str, Any] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                ]
            }
        },
        "podAntiAffinity": {"kept": True},
    }
    [default, dgx] = envelope_groups(envelope(({"matchLabels": {"type": "dgx"}}, 6500)))
    merged = merged_affinity(user, dgx.terms)
    assert merged is not None and merged["podAntiAffinity"] == {"kept": True}
    for labels, admitted in [
        ({"type": "dgx", "zone": "a"}, True),
        ({"type": "dgx", "zone": "b"}, True),
        ({"type": "dgx", "zone": "c"}, False),
        ({"zone": "a"}, False),
    ]:
        assert affinity_admits(merged, labels) is admitted, labels
    assert affinity_admits(merged_affinity(user, default.terms), {"zone": "a"})
    assert user["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0] == {
        "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]
    }  # the spec's own affinity is not modified


def test_overrides_that_explode_into_too_many_terms_are_refused() -> None:
    keys = [f"k{i}" for i in range(4)]
    overrides = [({"matchLabels": {key: f"v{n}" for key in keys}}, 100.0 + n) for n in range(4)]
    assert len(list(itertools.product(keys, repeat=4))) > MAX_AFFINITY_TERMS
    with pytest.raises(PlacementError, match="node-affinity terms"):
        envelope_groups(envelope(*overrides))
