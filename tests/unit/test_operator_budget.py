"""The fleet power budget's sharing rule (operator/esnode_operator/power/budget.py)."""

from __future__ import annotations

import pytest

from esnode_operator.power.budget import NodeDemand, Reporting, settle, share_budget


def _node(
    name: str, power: float | None, reporting: Reporting = Reporting.FRESH, **extra: float
) -> NodeDemand:
    return NodeDemand(name, reporting, power, floor_watts=2400.0, ceiling_watts=6400.0, **extra)  # type: ignore[arg-type]


def test_the_budget_is_never_exceeded_and_busy_nodes_get_more() -> None:
    nodes = [_node("busy", 6000.0), _node("idle", 1500.0), _node("mid", 4000.0)]
    allocation = share_budget(12_000.0, nodes)
    envelopes = allocation.envelopes_watts
    assert allocation.allocated_watts <= 12_000.0
    assert envelopes["busy"] > envelopes["mid"] > envelopes["idle"] >= 2400.0
    assert allocation.covers_floors


def test_spare_budget_gives_room_up_to_the_ceilings_and_never_beyond() -> None:
    allocation = share_budget(100_000.0, [_node("a", 3000.0), _node("b", 1000.0)])
    assert allocation.envelopes_watts == {"a": 6400.0, "b": 6400.0}


def test_static_envelopes_win_and_stale_nodes_reserve_their_ceiling() -> None:
    nodes = [
        _node("static", 6000.0, static_envelope_watts=3000.0),
        _node("gone", None, Reporting.STALE),
        _node("quiet", None, Reporting.SILENT, last_envelope_watts=4000.0),
        _node("live", 6000.0),
    ]
    envelopes = share_budget(16_000.0, nodes).envelopes_watts
    assert envelopes["static"] == 3000.0
    assert envelopes["gone"] == 6400.0
    assert envelopes["quiet"] == 4000.0
    assert envelopes["live"] == pytest.approx(2600.0)  # what is left: 16000 - 3000 - 6400 - 4000


def test_a_budget_below_the_floors_gives_the_floors_and_says_so() -> None:
    allocation = share_budget(4000.0, [_node("a", 5000.0), _node("b", 5000.0)])
    assert allocation.envelopes_watts == {"a": 2400.0, "b": 2400.0}
    assert not allocation.covers_floors


def test_small_moves_keep_the_previous_envelopes_within_the_budget() -> None:
    nodes = [_node("a", 5000.0), _node("b", 4000.0), _node("c", 3000.0)]
    first = share_budget(12_000.0, nodes)
    moved = share_budget(12_000.0, [_node("a", 5060.0), nodes[1], _node("c", 2950.0)])
    kept = settle(first.envelopes_watts, moved, 12_000.0, deadband_watts=100.0)
    assert kept == first.envelopes_watts  # nothing to write
    assert sum(kept.values()) <= 12_000.0
    jumped = share_budget(12_000.0, [_node("a", 6400.0), nodes[1], _node("c", 1000.0)])
    written = settle(first.envelopes_watts, jumped, 12_000.0, deadband_watts=100.0)
    assert written["a"] > first.envelopes_watts["a"] + 100 and sum(written.values()) <= 12_000.0
