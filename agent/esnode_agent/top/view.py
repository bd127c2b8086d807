"""Plain-text panels of one /events snapshot: what the terminal view shows, colour-free.

Kept apart from textual so the wording is checked without a terminal. Everything fits 80
columns; states are words (OK, EXCEEDED, FAILED), never only a colour.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SPARK_CHARS = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 16
PANELS = ("gpus", "power", "health")
GIB = 1024**3


def sparkline(values: Iterable[float], low: float | None = None, high: float | None = None) -> str:
    points = list(values)[-SPARK_POINTS:]
    if not points:
        return ""
    bottom = min(points) if low is None else low
    top = max(points) if high is None else high
    span = top - bottom
    steps = len(SPARK_CHARS) - 1
    return "".join(
        SPARK_CHARS[0 if span <= 0 else min(steps, max(0, round((v - bottom) / span * steps)))]
        for v in points
    )


@dataclass
class Trends:
    """Recent values per GPU and for the node, seeded from local history when it is on."""

    gpu_utilization: dict[str, deque[float]] = field(default_factory=dict)
    node_power: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))

    def add_gpu(self, gpu: str, value: float) -> None:
        self.gpu_utilization.setdefault(gpu, deque(maxlen=SPARK_POINTS)).append(value)

    def add_snapshot(self, view: dict[str, Any]) -> None:
        for gpu in view.get("gpus", []):
            if gpu.get("utilization_percent") is not None:
                self.add_gpu(str(gpu["gpu"]), gpu["utilization_percent"])
        watts = view.get("power", {}).get("node_power_watts")
        if watts is not None:
            self.node_power.append(watts)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def envelope_line(view: dict[str, Any]) -> str:
    watts = view.get("power", {}).get("node_power_watts")
    envelope = view.get("envelope", {})
    limit = envelope.get("envelope_watts")
    if limit is None:
        return f"Node power {_number(watts, 1)} W | envelope: none set"
    share = "" if watts is None else f" ({100 * watts / limit:.0f}%)"
    state = "EXCEEDED" if envelope.get("exceeded") else "OK"
    return f"Node power {_number(watts, 1)} W of envelope {limit:.0f} W{share} | {state}"


def gpu_panel(view: dict[str, Any], trends: Trends) -> str:
    lines = [f"{'GPU':<4}{'UTIL%':>6}{'MEM GiB used/total':>20}{'POWER W':>9}{'TEMP C':>7}  TREND"]
    for gpu in view.get("gpus", []):
        memory = f"{_number(_gib(gpu.get('memory_used_bytes')), 1)}/{_number(_gib(gpu.get('memory_total_bytes')), 0)}"
        state = "" if gpu.get("up", True) else " LOST"
        trend = sparkline(trends.gpu_utilization.get(str(gpu["gpu"]), ()), 0.0, 100.0)
        lines.append(
            f"{gpu['gpu']:<4}{_number(gpu.get('utilization_percent')):>6}{memory:>20}"
            f"{_number(gpu.get('power_watts'), 0):>9}{_number(gpu.get('temperature_celsius')):>7}  {trend}{state}"
        )
    if len(lines) == 1:
        lines.append("no GPUs reported")
    return "\n".join(lines)


def power_panel(view: dict[str, Any], trends: Trends) -> str:
    power = view.get("power", {})
    envelope = view.get("envelope", {})
    lines = [
        envelope_line(view),
        f"  headroom        {_number(envelope.get('headroom_watts'), 1)} W",
        f"  source          {power.get('source') or '-'}",
        f"  GPUs together   {_number(power.get('gpu_power_watts'), 1)} W",
        f"  trend           {sparkline(trends.node_power)}",
    ]
    for package, watts in sorted(power.get("cpu_package_power_watts", {}).items()):
        lines.append(f"  CPU package {package:<3} {_number(watts, 1)} W")
    return "\n".join(lines)


def health_panel(view: dict[str, Any]) -> str:
    degradation = view.get("degradation", {})
    raised = sorted(kind for kind, on in degradation.get("flags", {}).items() if on)
    lines = [
        f"Degradation score {_number(degradation.get('score'))}; flags: {', '.join(raised) or 'none raised'}",
        "Collectors:",
    ]
    for name, health in sorted(view.get("collectors", {}).items()):
        error = health.get("error") or ""
        state = "OK" if health.get("success") else "NO DATA" if error.startswith("no data") else "FAILED"
        error = f"  {error.removeprefix('no data: ')}" if error else ""
        lines.append(f"  {name:<14}{state:<8}{health.get('duration_seconds', 0) * 1000:7.1f} ms{error}"[:80])
    return "\n".join(lines)


def panel(name: str, view: dict[str, Any], trends: Trends) -> str:
    if name == "power":
        return power_panel(view, trends)
    if name == "health":
        return health_panel(view)
    return gpu_panel(view, trends)


def summary_line(view: dict[str, Any]) -> str:
    failed = sum(
        1
        for h in view.get("collectors", {}).values()
        if not h.get("success") and not (h.get("error") or "").startswith("no data")
    )
    flags = sum(1 for on in view.get("degradation", {}).get("flags", {}).values() if on)
    return (
        f"cycle {view.get('sequence', '-')} | {len(view.get('gpus', []))} GPUs | "
        f"collectors failing: {failed} | flags raised: {flags}"
    )


def _gib(value: float | None) -> float | None:
    return None if value is None else value / GIB
