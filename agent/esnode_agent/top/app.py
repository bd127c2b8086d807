"""The textual application: follows a running agent's /events stream; never writes to it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

import httpx
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static

from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.top.view import PANELS, SPARK_POINTS, Trends, envelope_line, panel, summary_line

HISTORY_METRICS = "esnode_gpu_utilization_percent,esnode_node_power_watts"
RECONNECT_SECONDS = 2.0


class TopApp(App[None]):
    """Header lines (envelope, summary), one panel below, keys in the footer."""

    TITLE = "esnode top"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "show('gpus')", "GPUs"),
        Binding("p", "show('power')", "Power"),
        Binding("h", "show('health')", "Health"),
        Binding("tab", "next_panel", "Next", priority=True),  # before focus moves
        Binding("q", "quit", "Quit"),
    ]
    CSS = "#envelope, #summary { height: 1; } #panel { height: 1fr; }"

    def __init__(self, address: str, interval_hint_seconds: float = 5.0) -> None:
        super().__init__()
        self.base_url = address if "://" in address else f"http://{address}"
        self.panel_name = PANELS[0]
        self.view: dict[str, Any] = {}
        self.trends = Trends()
        self.snapshots_seen = 0
        self._interval_hint_seconds = interval_hint_seconds
        self._shown = {"envelope": f"connecting to {self.base_url} ...", "summary": "", "panel": ""}

    def compose(self) -> ComposeResult:
        for name, text in self._shown.items():
            yield Static(text, id=name)
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._follow(), exclusive=True)

    def action_show(self, name: str) -> None:
        self.panel_name = name
        self._refresh()

    def action_next_panel(self) -> None:
        self.action_show(PANELS[(PANELS.index(self.panel_name) + 1) % len(PANELS)])

    def screen_text(self) -> str:
        """What the three text areas show now, as plain text."""
        return "\n".join(self._shown.values())

    def _show(self, name: str, text: str) -> None:
        self._shown[name] = text
        self.query_one(f"#{name}", Static).update(text)

    async def _follow(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(10.0, read=60.0)
        ) as client:
            await self._seed_from_history(client)
            while True:
                try:
                    async with aconnect_sse(client, "GET", "/events") as source:
                        async for event in source.aiter_sse():
                            if event.event == "snapshot":
                                self._on_view(json.loads(event.data))
                except (httpx.HTTPError, ValueError) as exc:
                    self._show("envelope", f"agent unreachable ({exc}); retrying")
                    await asyncio.sleep(RECONNECT_SECONDS)

    async def _seed_from_history(self, client: httpx.AsyncClient) -> None:
        """Sparklines start full when the agent keeps local history; without it they fill live."""
        now = time.time()
        params = {
            "from": str(now - SPARK_POINTS * self._interval_hint_seconds * 4),
            "to": str(now),
            "metrics": HISTORY_METRICS,
        }
        try:
            response = await client.get("/tsdb/export", params=params)
        except httpx.HTTPError:
            return
        if response.status_code != 200:
            return
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == NODE_POWER.name:
                    self.trends.node_power.append(sample.value)
                elif "gpu" in sample.labels:
                    self.trends.add_gpu(sample.labels["gpu"], sample.value)

    def _on_view(self, view: dict[str, Any]) -> None:
        self.view = view
        self.snapshots_seen += 1
        self.trends.add_snapshot(view)
        self._refresh()

    def _refresh(self) -> None:
        if not self.view:
            return
        self._show("envelope", envelope_line(self.view))
        self._show("summary", f"{summary_line(self.view)} | panel: {self.panel_name}")
        self._show("panel", panel(self.panel_name, self.view, self.trends))
