"""What the kubelet makes of an agent pod's spec: the files of its config volume, its environment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubelet_expansion import expand


def kubelet_writes(
    volume: dict[str, Any], configmap: dict[str, Any], secret: Mapping[str, Path], root: Path
) -> None:
    """The files the kubelet puts in the volume: a ConfigMap's keys, a projected Secret's items."""
    sources = (
        volume["projected"]["sources"] if "projected" in volume else [{"configMap": volume["configMap"]}]
    )
    for source in sources:
        if "configMap" in source:
            assert source["configMap"]["name"] == configmap["metadata"]["name"]
            for key, text in configmap["data"].items():
                (root / key).write_text(text)
        else:
            for item in source["secret"]["items"]:
                target = root / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(secret[item["key"]].read_bytes())


def kubelet_env(
    env: list[dict[str, Any]], secrets: Mapping[str, Mapping[str, str]], fields: Mapping[str, str]
) -> dict[str, str]:
    """The container's environment: values expanded, secretKeyRef and fieldRef resolved."""
    resolved: dict[str, str] = {}
    for variable in env:
        if "value" in variable:
            value = expand(variable["value"], resolved)
        elif "secretKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        else:
            value = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        resolved[variable["name"]] = value
    return resolved
