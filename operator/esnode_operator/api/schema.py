"""Pydantic JSON Schema -> Kubernetes structural OpenAPI v3 schema.

What the apiserver needs differs from JSON Schema in a few ways: no ``$ref`` (definitions are
inlined), no ``anyOf`` with null (``nullable``), int-or-string as ``x-kubernetes-int-or-string``,
OpenAPI 3.0's boolean ``exclusiveMinimum``, no ``patternProperties``/``propertyNames`` (map keys
are checked by a CEL rule instead), free-form objects marked ``x-kubernetes-preserve-unknown-fields``,
and defaults that carry no nulls. Object defaults become ``{}`` so nested defaults fill them in.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

# Keys kept as they are; everything else is either converted below or dropped (title, examples...).
_PASSTHROUGH = {
    "type",
    "description",
    "enum",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
}


def structural_schema(model: type[BaseModel]) -> Schema:
    """The model's validation schema (camelCase names) in the apiserver's dialect."""
    source = model.model_json_schema(by_alias=True, mode="validation")
    definitions = source.get("$defs", {})
    return _convert(source, definitions)


def _convert(node: Schema, definitions: Schema) -> Schema:
    node = _resolve(node, definitions)
    if "anyOf" in node:
        return _convert_any_of(node, definitions)
    out: Schema = {key: value for key, value in node.items() if key in _PASSTHROUGH or key.startswith("x-")}
    if "const" in node:
        out["enum"] = [node["const"]]
    out.update(_exclusive_bounds(node))
    if out.get("type") == "number":
        _rule_fractional_bounds(out)
    if node.get("type") == "object":
        out.update(_convert_object(node, definitions))
    if node.get("type") == "array" and "items" in node:
        out["items"] = _convert(node["items"], definitions)
    if "default" in node:
        out["default"] = _clean_default(node["default"], out)
    if out.get("required") == []:
        del out["required"]
    return out


def _resolve(node: Schema, definitions: Schema) -> Schema:
    """Inline a ``$ref``, keeping the referring node's own keys (default, description)."""
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged = {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return _resolve(merged, definitions)


def _convert_any_of(node: Schema, definitions: Schema) -> Schema:
    branches = [_resolve(branch, definitions) for branch in node["anyOf"]]
    non_null = [branch for branch in branches if branch.get("type") != "null"]
    outer = {key: value for key, value in node.items() if key != "anyOf"}
    if {branch.get("type") for branch in non_null} == {"integer", "string"} and len(non_null) == 2:
        string_branch = next(branch for branch in non_null if branch["type"] == "string")
        merged = {**outer, "x-kubernetes-int-or-string": True}
        merged.update({k: v for k, v in string_branch.items() if k in ("pattern", "maxLength")})
        return _convert_int_or_string(merged)
    if len(non_null) != 1:
        raise ValueError(f"cannot express anyOf {node['anyOf']!r} structurally")
    converted = _convert({**non_null[0], **outer}, definitions)
    if len(branches) > 1:  # one branch was null
        converted["nullable"] = True
        if converted.get("default") is None:
            converted.pop("default", None)
    return converted


def _convert_int_or_string(node: Schema) -> Schema:
    out = {key: value for key, value in node.items() if key in _PASSTHROUGH or key.startswith("x-")}
    if "default" in node:
        out["default"] = node["default"]
    return out


def _exclusive_bounds(node: Schema) -> Schema:
    """JSON Schema's numeric exclusive bounds as OpenAPI 3.0's boolean flags."""
    out: Schema = {}
    if "exclusiveMinimum" in node:
        out.update(minimum=node["exclusiveMinimum"], exclusiveMinimum=True)
    if "exclusiveMaximum" in node:
        out.update(maximum=node["exclusiveMaximum"], exclusiveMaximum=True)
    return out


def _rule_fractional_bounds(out: Schema) -> None:
    """The apiserver checks an integer value against ``minimum``/``maximum`` truncated to an integer
    (0 passed ``minimum: 0.1``, measured on kube-apiserver 1.35): a fractional bound is also a CEL
    rule, which compares as numbers."""
    rules = []
    for key, flag, compare, says in (
        ("minimum", "exclusiveMinimum", (">=", ">"), ("at least", "greater than")),
        ("maximum", "exclusiveMaximum", ("<=", "<"), ("at most", "less than")),
    ):
        bound = out.get(key)
        if isinstance(bound, float) and not bound.is_integer():
            strict = bool(out.get(flag))
            rules.append(
                {"rule": f"self {compare[strict]} {bound!r}", "message": f"must be {says[strict]} {bound!r}"}
            )
    if rules:
        out.setdefault("x-kubernetes-validations", []).extend(rules)


def _convert_object(node: Schema, definitions: Schema) -> Schema:
    out: Schema = {}
    if "properties" in node:
        out["properties"] = {name: _convert(child, definitions) for name, child in node["properties"].items()}
        return out
    patterns = node.get("patternProperties", {})
    values = node.get("additionalProperties", True)
    if patterns:
        (key_pattern, values), *rest = patterns.items()
        if rest:
            raise ValueError("more than one key pattern cannot be expressed")
        key_limit = node.get("propertyNames", {}).get("maxLength")
        out.setdefault("x-kubernetes-validations", []).append(_key_rule(key_pattern, key_limit))
    if values is True or values == {}:
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif values is not False:
        out["additionalProperties"] = _convert(values, definitions)
    return out


def _key_rule(pattern: str, max_length: int | None) -> Schema:
    escaped = pattern.replace("\\", "\\\\").replace("'", "\\'")
    check = f"k.matches('{escaped}')"
    if max_length is not None:
        check = f"size(k) <= {max_length} && {check}"
    return {"rule": f"self.all(k, {check})", "message": "keys must be valid label keys"}


def _clean_default(value: Any, schema: Schema) -> Any:
    """Defaults without nulls; an object default is {} so that its fields' own defaults apply."""
    if isinstance(value, dict) and "properties" in schema:
        return {}
    return _drop_nulls(value)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_nulls(item) for item in value]
    return value
