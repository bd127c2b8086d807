"""Fields of a child that someone else added, read from its managedFields, and how to take them back.

Server-side apply with force takes back every field the operator sets, but it never removes a
field another manager owns: an added env var, sidecar, label or ConfigMap key would stay. So the
other managers' field sets (spec and metadata writes, not a controller's status) are merged into
the operator's own apply entry: the next apply of the desired object then no longer sets them,
and server-side apply removes what its manager dropped and nobody else owns. Fields nobody owns
(the apiserver's defaults, annotations its strategies add) are untouched.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from esnode_operator.names import FIELD_MANAGER

FieldSet = dict[str, Any]  # fieldsV1: "f:<field>", "k:<keys json>", "v:<value json>", "." for itself
MAX_SHOWN_PATHS = 5


def is_own_apply(entry: Mapping[str, Any]) -> bool:
    return entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply"


def foreign_entries(managed_fields: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Entries of other writers of the object itself (a subresource such as status is theirs)."""
    return [e for e in managed_fields if not is_own_apply(e) and not e.get("subresource")]


def merged(left: FieldSet, right: FieldSet) -> FieldSet:
    out = copy.deepcopy(left)
    for key, value in right.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out.setdefault(key, copy.deepcopy(value))
    return out


def added_paths(theirs: FieldSet, ours: FieldSet, prefix: str = "") -> list[str]:
    """What ``theirs`` holds that ``ours`` does not, as readable paths (the outermost of each)."""
    paths: list[str] = []
    for key, value in theirs.items():
        if key == ".":
            continue
        path = prefix + _step(key)
        if key not in ours:
            paths.append(path)
        elif isinstance(value, dict) and isinstance(ours[key], dict):
            paths += added_paths(value, ours[key], path)
    return paths


def _step(key: str) -> str:
    kind, _, text = key.partition(":")
    if kind == "f":
        return "." + text
    if kind == "k":
        keys = json.loads(text)
        return "[" + ",".join(f"{k}={v}" for k, v in keys.items()) + "]"
    return f"[{text}]"  # "v:" a set's value, "i:" an index


def additions(live: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(managers, paths) of what others wrote beyond the operator's fields; empty when nothing."""
    managed = live["metadata"].get("managedFields") or []
    ours = next((e.get("fieldsV1") or {} for e in managed if is_own_apply(e)), {})
    others = foreign_entries(managed)
    paths: list[str] = []
    for entry in others:
        paths += [p for p in added_paths(entry.get("fieldsV1") or {}, ours) if p not in paths]
    return sorted({str(e.get("manager", "")) for e in others}), [p.lstrip(".") for p in paths]


def adoption_patch(live: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch making the operator's apply entry own every field others wrote; None if none.

    Conditional on the live resourceVersion: a write in between answers 409 and the next event
    starts over. Subresource entries (the controllers' status) are kept as they are.
    """
    managed = live["metadata"].get("managedFields") or []
    own = next((e for e in managed if is_own_apply(e)), None)
    others = foreign_entries(managed)
    if own is None or not others:
        return None
    fields: FieldSet = dict(own.get("fieldsV1") or {})
    for entry in others:
        fields = merged(fields, entry.get("fieldsV1") or {})
    kept = [dict(e) for e in managed if e is not own and e not in others]
    return {
        "metadata": {
            "resourceVersion": live["metadata"]["resourceVersion"],
            "managedFields": [{**own, "fieldsV1": fields}, *kept],
        }
    }


def describe(kind: str, name: str, managers: Sequence[str], paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:MAX_SHOWN_PATHS]) + (
        f" and {len(paths) - MAX_SHOWN_PATHS} more" if len(paths) > MAX_SHOWN_PATHS else ""
    )
    return f"{kind} {name}: removed what {', '.join(managers) or 'another writer'} added ({shown})"
