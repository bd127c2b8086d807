"""Degradation flags: each one set and not set around its threshold, and the score that counts them."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from esnode_agent.collectors import diskstats, memory, network
from esnode_agent.collectors.degradation import KINDS, DegradationCollector, Thresholds
from esnode_agent.collectors.diskstats import DiskStatsCollector
from esnode_agent.collectors.memory import MemoryCollector
from esnode_agent.collectors.network import NetworkCollector
from esnode_agent.config.model import DEFAULT_DISK_DEVICE_EXCLUDE, AgentConfig
from esnode_agent.cycle.collector import Collector
from esnode_agent.cycle.samples import SampleIndex, SampleSink, counter, gauge

FIXTURE_PROC = Path(__file__).parents[1] / "fixtures" / "host" / "proc"
INTERVAL_SECONDS = 10.0
MIB = 1024 * 1024

# GPU series as the contract names them; the GPU collector is not needed to judge them.
GPU_THROTTLE = gauge("esnode_gpu_throttle_reason", "Throttle reason active.", "gpu", "uuid", "reason")
GPU_ECC = counter("esnode_gpu_ecc_errors_total", "ECC errors.", "gpu", "uuid", "type")

Upstream = Callable[[SampleSink], None]


def nothing(_: SampleSink) -> None:
    pass


class Cycles:
    """Runs the collector over hand-made upstream samples, INTERVAL_SECONDS apart."""

    def __init__(self, limits: Thresholds | None = None) -> None:
        self.collector = DegradationCollector(
            limits or Thresholds.from_config(AgentConfig.model_validate({}))
        )
        self.at_seconds = 1000.0

    def run(self, upstream: Upstream) -> SampleIndex:
        produced = SampleSink(self.at_seconds)
        upstream(produced)
        sink = SampleSink(self.at_seconds, SampleIndex(produced.samples))
        self.collector.collect(sink)
        self.at_seconds += INTERVAL_SECONDS
        return SampleIndex(sink.samples)

    def flags(self, first: Upstream, second: Upstream) -> dict[str, float]:
        self.run(first)
        return flags(self.run(second))


def flags(samples: SampleIndex) -> dict[str, float]:
    return {s.label("kind"): s.value for s in samples.named("esnode_degradation_flag")}


def disk(
    *,
    reads: float = 0,
    writes: float = 0,
    read_s: float = 0,
    write_s: float = 0,
    io_s: float = 0,
    device: str = "sda",
) -> Upstream:
    def add(sink: SampleSink) -> None:
        sink.add(diskstats.READS_COMPLETED, reads, device=device)
        sink.add(diskstats.WRITES_COMPLETED, writes, device=device)
        sink.add(diskstats.READ_TIME, read_s, device=device)
        sink.add(diskstats.WRITE_TIME, write_s, device=device)
        sink.add(diskstats.IO_TIME, io_s, device=device)

    return add


def drops(**by_interface: tuple[float, float]) -> Upstream:
    def add(sink: SampleSink) -> None:
        for interface, (rx, tx) in by_interface.items():
            sink.add(network.RX_DROPPED, rx, interface=interface)
            sink.add(network.TX_DROPPED, tx, interface=interface)

    return add


def tcp(sent: float, retransmitted: float) -> Upstream:
    def add(sink: SampleSink) -> None:
        sink.add(network.TCP_SEGMENTS_SENT, sent)
        sink.add(network.TCP_SEGMENTS_RETRANSMITTED, retransmitted)

    return add


def swap_in(total_bytes: float) -> Upstream:
    return lambda sink: sink.add(memory.SWAP_IN, total_bytes)


def throttle(**active: float) -> Upstream:
    def add(sink: SampleSink) -> None:
        for reason, value in active.items():
            sink.add(GPU_THROTTLE, value, gpu="0", uuid="GPU-a", reason=reason)

    return add


def ecc(uncorrected: float, corrected: float = 0, uuid: str = "GPU-a") -> Upstream:
    def add(sink: SampleSink) -> None:
        sink.add(GPU_ECC, corrected, gpu="0", uuid=uuid, type="corrected")
        sink.add(GPU_ECC, uncorrected, gpu="0", uuid=uuid, type="uncorrected")

    return add


def test_every_kind_is_exported_and_unset_on_the_first_cycle_whatever_the_counters() -> None:
    def alarming(sink: SampleSink) -> None:
        for add in (
            disk(reads=1, writes=1, io_s=100),
            drops(eth0=(1e6, 1e6)),
            tcp(1e6, 1e6),
            swap_in(1e12),
            ecc(99),
        ):
            add(sink)

    samples = Cycles().run(alarming)

    assert flags(samples) == dict.fromkeys(KINDS, 0.0)
    assert samples.value("esnode_degradation_score") == 0


@pytest.mark.parametrize(("io_seconds", "expected"), [(4.9, 0.0), (5.1, 1.0)])
def test_disk_latency_is_mean_time_per_completed_io_over_50_ms(io_seconds: float, expected: float) -> None:
    # 100 I/Os completed (60 reads, 40 writes) taking io_seconds in all.
    result = Cycles().flags(disk(), disk(reads=60, writes=40, read_s=io_seconds / 2, write_s=io_seconds / 2))

    assert result["disk_latency"] == expected


def test_disk_latency_is_judged_per_device() -> None:
    slow = disk(reads=10, read_s=1.0, device="sdb")  # 100 ms per I/O
    fast = disk(reads=1000, read_s=1.0, device="sda")  # 1 ms per I/O

    def both_before(sink: SampleSink) -> None:
        disk(device="sda")(sink)
        disk(device="sdb")(sink)

    def both_after(sink: SampleSink) -> None:
        fast(sink)
        slow(sink)

    assert Cycles().flags(both_before, both_after)["disk_latency"] == 1.0


def test_disk_latency_is_unset_when_no_io_completed() -> None:
    assert Cycles().flags(disk(read_s=1.0), disk(read_s=2.0))["disk_latency"] == 0.0


@pytest.mark.parametrize(("busy_seconds", "expected"), [(8.9, 0.0), (9.1, 1.0)])
def test_disk_busy_is_io_time_share_of_the_interval_over_0_9(busy_seconds: float, expected: float) -> None:
    result = Cycles().flags(disk(io_s=100.0), disk(io_s=100.0 + busy_seconds))

    assert result["disk_busy"] == expected


@pytest.mark.parametrize(("tx_dropped", "expected"), [(3, 0.0), (5, 1.0)])
def test_network_drops_sums_both_directions_on_all_interfaces_per_second(
    tx_dropped: float, expected: float
) -> None:
    # 10 s interval: eth0 drops 6 received, eth1 drops tx_dropped sent -> 0.9/s or 1.1/s against 1/s.
    result = Cycles().flags(drops(eth0=(0, 0), eth1=(0, 0)), drops(eth0=(6, 0), eth1=(0, tx_dropped)))

    assert result["network_drops"] == expected


def test_an_interface_that_appears_brings_no_drops_with_it() -> None:
    result = Cycles().flags(drops(eth0=(5, 5)), drops(eth0=(5, 5), veth1=(5000, 5000)))

    assert result["network_drops"] == 0.0


@pytest.mark.parametrize(("retransmitted", "expected"), [(19, 0.0), (21, 1.0)])
def test_network_retrans_is_retransmitted_over_sent_segments_over_2_percent(
    retransmitted: float, expected: float
) -> None:
    result = Cycles().flags(tcp(5000, 100), tcp(6000, 100 + retransmitted))

    assert result["network_retrans"] == expected


def test_network_retrans_needs_a_hundred_segments_sent_to_judge() -> None:
    assert Cycles().flags(tcp(5000, 100), tcp(5099, 199))["network_retrans"] == 0.0


@pytest.mark.parametrize(("extra_bytes", "expected"), [(-4096, 0.0), (4096, 1.0)])
def test_swap_spike_is_swap_in_rate_over_1_mib_per_second(extra_bytes: float, expected: float) -> None:
    result = Cycles().flags(swap_in(MIB), swap_in(MIB + 10 * MIB + extra_bytes))

    assert result["swap_spike"] == expected


@pytest.mark.parametrize("reason", ["thermal", "hw_slowdown", "sw_thermal", "power_brake"])
def test_gpu_throttle_is_set_by_a_heat_or_hardware_reason_even_on_the_first_cycle(reason: str) -> None:
    samples = Cycles().run(throttle(**{reason: 1.0, "idle": 0.0}))

    assert flags(samples)["gpu_throttle"] == 1.0


def test_gpu_throttle_ignores_power_cap_idle_and_inactive_reasons() -> None:
    samples = Cycles().run(throttle(power=1.0, idle=1.0, sync_boost=1.0, thermal=0.0))

    assert flags(samples)["gpu_throttle"] == 0.0


def test_gpu_flags_are_unset_without_gpu_series() -> None:
    result = Cycles().flags(nothing, nothing)

    assert result["gpu_throttle"] == 0.0
    assert result["gpu_ecc"] == 0.0


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [(ecc(3), ecc(4), 1.0), (ecc(3), ecc(3), 0.0), (ecc(3, corrected=5), ecc(3, corrected=9), 0.0)],
)
def test_gpu_ecc_is_set_when_uncorrected_errors_grew(
    before: Upstream, after: Upstream, expected: float
) -> None:
    assert Cycles().flags(before, after)["gpu_ecc"] == expected


def test_a_counter_that_went_backwards_sets_nothing() -> None:
    result = Cycles().flags(disk(reads=1e6, read_s=1e5, io_s=1e5), disk(reads=10, read_s=9, io_s=9))

    assert result["disk_latency"] == result["disk_busy"] == 0.0


def test_score_counts_the_flags_set() -> None:
    def before(sink: SampleSink) -> None:
        disk(io_s=0)(sink)
        swap_in(0)(sink)

    def after(sink: SampleSink) -> None:
        disk(io_s=10)(sink)  # busy the whole interval
        swap_in(100 * MIB)(sink)
        throttle(thermal=1.0)(sink)

    cycles = Cycles()
    cycles.run(before)
    samples = cycles.run(after)

    assert {kind for kind, value in flags(samples).items() if value} == {
        "disk_busy",
        "swap_spike",
        "gpu_throttle",
    }
    assert samples.value("esnode_degradation_score") == 3


def test_thresholds_come_from_the_config() -> None:
    config = AgentConfig.model_validate({"degradation_disk_busy_ratio": 0.5})
    result = Cycles(Thresholds.from_config(config)).flags(disk(io_s=0), disk(io_s=6))

    assert result["disk_busy"] == 1.0


def test_flags_from_the_real_collectors_reading_two_snapshots(tmp_path: Path) -> None:
    proc = Path(shutil.copytree(FIXTURE_PROC, tmp_path / "proc"))
    readers: list[Collector] = [
        DiskStatsCollector(proc, DEFAULT_DISK_DEVICE_EXCLUDE),
        NetworkCollector(proc, r"^lo$"),
        MemoryCollector(proc, page_size_bytes=4096),
    ]

    def read_stage(sink: SampleSink) -> None:
        for reader in readers:
            reader.collect(sink)

    cycles = Cycles()
    cycles.run(read_stage)
    # In 10 s: sda busy 9.5 s; swap-in 5000 pages of 4 KiB (2 MiB/s); 200 TCP segments, 10 resent.
    diskstats_text = (proc / "diskstats").read_text()
    (proc / "diskstats").write_text(diskstats_text.replace("0 9000 14000", "0 18500 14000"))
    (proc / "vmstat").write_text((proc / "vmstat").read_text().replace("pswpin 1500", "pswpin 6500"))
    (proc / "net" / "snmp").write_text((proc / "net" / "snmp").read_text().replace("24624 37", "24824 47"))
    result = flags(cycles.run(read_stage))

    assert {kind for kind, value in result.items() if value} == {"disk_busy", "swap_spike", "network_retrans"}


def test_every_kind_is_documented_and_every_documented_kind_exists() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "degradation.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.M))
    assert documented == set(KINDS)
