"""The latest finished cycle, rendered, and a way for readers to wait for the next one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.serve.exposition import Exposition, render
from esnode_agent.serve.status_view import RenderedStatus, render_status


@dataclass(frozen=True, slots=True)
class Publication:
    snapshot: Snapshot
    exposition: Exposition
    status: RenderedStatus


class Latest:
    """Holds the newest Publication; the collection loop writes it, HTTP handlers only read."""

    def __init__(self) -> None:
        self.current: Publication | None = None
        self._changed = asyncio.Condition()

    async def publish(self, snapshot: Snapshot) -> None:
        exposition, status = await asyncio.to_thread(_render, snapshot)
        async with self._changed:
            self.current = Publication(snapshot, exposition, status)
            self._changed.notify_all()

    async def next_after(self, sequence: int) -> Publication:
        """Wait for a publication newer than ``sequence``."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.current is not None and self.current.snapshot.sequence > sequence
            )
            assert self.current is not None
            return self.current


def _render(snapshot: Snapshot) -> tuple[Exposition, RenderedStatus]:
    return render(snapshot.samples), render_status(snapshot)
