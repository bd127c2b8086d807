"""metav1.Condition for every writer of a fleet's status: its shape, clock and transition rule.

Two writers (the reconciler and the power summary) stamp conditions; the rule that
``lastTransitionTime`` moves only when a condition's status does lives here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

MAX_MESSAGE_LENGTH = 32768  # metav1.Condition's limit


def utc_now() -> str:
    """The condition clock: RFC 3339 in UTC, whole seconds (metav1.Time's precision)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool | None, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Condition without its times; status None is Unknown."""
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
    text = "Unknown" if status is None else "True" if status else "False"
    return {"type": type_, "status": text, "reason": reason, "message": message}


def stamp_transition(
    new: dict[str, Any], previous_conditions: Iterable[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    """Give ``new`` the previous lastTransitionTime of its type if its status did not change, else ``now``."""
    before = next((c for c in previous_conditions if c.get("type") == new["type"]), {})
    same = before.get("status") == new["status"] and before.get("lastTransitionTime")
    new["lastTransitionTime"] = before["lastTransitionTime"] if same else now
    return new
