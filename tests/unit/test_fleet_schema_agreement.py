"""The EsnodeFleet model and its CRD schema accept the same specs (property-based).

Specs are drawn from the CRD's own spec schema, on both sides of every bound, pattern and type.
jsonschema (Draft 4, whose boolean exclusiveMinimum is OpenAPI 3.0's) stands in for the
apiserver's structural validation with strict field validation, kubectl's default: unknown fields
refused, `nullable` honoured. The model is held to strict types as the apiserver is (its lax mode
takes `true` for 1.0, which never reaches it past the apiserver). CEL (x-kubernetes-validations) is not evaluated, so a spec the
schema accepts and the model refuses must be refused by a model rule the CRD carries as CEL.
"""

from __future__ import annotations

import math
from typing import Any

import jsonschema
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from esnode_operator.api.crd import fleet_crd
from esnode_operator.api.models import FleetSpec

Schema = dict[str, Any]
EXAMPLES = 100

_SPEC: Schema = fleet_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _as_draft4(node: Schema) -> Schema:
    """The apiserver's reading of one node, in the words jsonschema knows."""
    node = dict(node)
    if "properties" in node:
        node["properties"] = {name: _as_draft4(child) for name, child in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _as_draft4(node[key])
    if node.get("x-kubernetes-int-or-string"):
        node["type"] = ["integer", "string"]
    if node.pop("nullable", False):
        node["type"] = [*([node["type"]] if isinstance(node["type"], str) else node["type"]), "null"]
    return node


_VALIDATOR = jsonschema.Draft4Validator(_as_draft4(_SPEC))
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))


def _mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` eight times in nine: a spec is many fields, and each must be right for it to pass."""
    return st.integers(0, 8).flatmap(lambda pick: other if pick == 8 else usual)


def _numbers(node: Schema) -> st.SearchStrategy[Any]:
    edges: list[float] = [0, 1, -1, 0.5]
    for bound in ("minimum", "maximum"):
        if bound in node:
            value = node[bound]
            edges += [
                value,
                value - 1,
                value + 1,
                math.nextafter(value, math.inf),
                math.nextafter(value, -math.inf),
            ]
    if node["type"] == "integer":
        return (
            st.sampled_from([int(e) for e in edges])
            | st.integers(-(10**6), 10**6)
            | st.sampled_from([0.5, 2.0])
        )
    return st.sampled_from(edges) | st.floats(-1e6, 1e6) | st.integers(-10, 10)


def _strings(node: Schema) -> st.SearchStrategy[Any]:
    longest = node.get("maxLength", 16)
    text = st.text(max_size=min(longest + 2, 40)) | st.just("x" * (longest + 1))
    if "enum" in node:
        return _mostly(st.sampled_from(node["enum"]), text)
    if "pattern" in node:
        return _mostly(
            st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: len(s) <= longest + 1), text
        )
    return text


def _objects(node: Schema) -> st.SearchStrategy[Any]:
    if "properties" in node:
        optional = {name: _values(child) for name, child in node["properties"].items()}
        return _mostly(
            st.fixed_dictionaries({}, optional=optional), st.fixed_dictionaries({"unknownField": _SCALARS})
        )
    if isinstance(node.get("additionalProperties"), dict):
        keys = _mostly(
            st.from_regex(r"[a-z]([a-z0-9./-]{0,8}[a-z0-9])?", fullmatch=True), st.text(max_size=6)
        )
        return st.dictionaries(keys, _values(node["additionalProperties"]), max_size=3)
    return st.dictionaries(st.text(max_size=4), _SCALARS, max_size=2)  # free-form


def _values(node: Schema) -> st.SearchStrategy[Any]:
    """Values of one schema node: mostly of its type, near its bounds; sometimes of another type."""
    kind = "int-or-string" if node.get("x-kubernetes-int-or-string") else node["type"]
    typed: st.SearchStrategy[Any]
    if kind == "int-or-string":
        typed = st.integers(-1, 70000) | _strings({"type": "string", **node})
    elif kind in ("integer", "number"):
        typed = _numbers(node)
    elif kind == "string":
        typed = _strings(node)
    elif kind == "boolean":
        typed = st.booleans()
    elif kind == "array":
        typed = st.lists(_values(node["items"]), max_size=min(node.get("maxItems", 3) + 1, 3))
    else:
        typed = st.deferred(lambda: _objects(node))
    return _mostly(typed, _SCALARS)


def _cel_paths() -> set[tuple[str, ...]]:
    """Where the CRD carries CEL rules: (camelCase) paths, list items and map values as '*'."""
    paths: set[tuple[str, ...]] = set()

    def walk(node: Schema, path: tuple[str, ...]) -> None:
        if "x-kubernetes-validations" in node:
            paths.add(path)
        for name, child in node.get("properties", {}).items():
            walk(child, (*path, name))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], (*path, "*"))
        if "items" in node:
            walk(node["items"], (*path, "*"))

    walk(_SPEC, ())
    return paths


_CEL_PATHS = _cel_paths()


def _refused_by_a_cel_rule(error: Any) -> bool:
    """A model error from a validator (not a type or bound) at a node, or inside a map, with CEL."""
    loc = tuple("*" if isinstance(part, int) else str(part) for part in error["loc"])
    prefixes = {loc[:i] for i in range(len(loc) + 1)} | {(*loc[:i], "*") for i in range(len(loc))}
    return error["type"] in ("value_error", "assertion_error") and bool(prefixes & _CEL_PATHS)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values(_SPEC))
def test_the_model_and_the_crd_schema_accept_the_same_specs(spec: Any) -> None:
    schema_accepts = _VALIDATOR.is_valid(spec)
    event(f"schema accepts: {schema_accepts}")
    try:
        FleetSpec.model_validate(spec, strict=True)
    except ValidationError as exc:
        if schema_accepts:
            assert all(_refused_by_a_cel_rule(e) for e in exc.errors()), exc.errors()
            event("refused by a CEL rule only")
    else:
        assert schema_accepts, sorted(str(e.message) for e in _VALIDATOR.iter_errors(spec))
