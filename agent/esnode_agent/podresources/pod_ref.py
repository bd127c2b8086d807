"""Who holds a device: light enough to import without the gRPC stack."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PodRef:
    """The container(s) holding a device; several holders (shared GPUs) are joined with commas."""

    namespace: str
    pod: str
    container: str
