"""One EsnodeFleet as the builders see it: identity plus the parsed spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from esnode_operator.api.models import FleetSpec


@dataclass(frozen=True)
class Fleet:
    name: str
    namespace: str
    uid: str
    generation: int
    created: str  # metadata.creationTimestamp, RFC 3339: orders fleets by age
    spec: FleetSpec
    body: Mapping[str, Any]  # the object as read, the owner of every child

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Fleet:
        """Parse a fleet object; raises pydantic.ValidationError for a spec the models refuse."""
        metadata = body["metadata"]
        return cls(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata["uid"],
            generation=int(metadata.get("generation", 0)),
            created=metadata.get("creationTimestamp", ""),
            spec=FleetSpec.model_validate(body.get("spec") or {}),
            body=body,
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def adopted(obj: dict[str, Any], fleet: Fleet) -> dict[str, Any]:
    """The child with the fleet as its controlling owner (garbage-collected with it), in its namespace."""
    kopf.adopt(obj, owner=kopf.Body(cast(kopf.RawBody, dict(fleet.body))))
    return obj
