"""/status lists GPUs from the samples: a lost GPU is marked, MIG devices are listed under their GPU."""

from __future__ import annotations

from esnode_agent.collectors.gpu import GpuCollector
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.gpu.nvml_backend import open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import load_profile
from esnode_agent.gpu.visibility import DeviceList
from esnode_agent.serve.status_view import status_view


def test_status_marks_the_lost_gpu_and_lists_mig_devices() -> None:
    fake = FakeNvml(load_profile("h100-mig"))
    everything = DeviceList(everything=True)
    collector = GpuCollector(open_nvml(fake), everything, everything)
    fake.fail_gpu(2)
    sink = SampleSink(0.0)
    collector.collect(sink)
    snapshot = Snapshot(1, 100.0, 0.01, SampleIndex(sink.samples), ())
    gpus = {gpu["gpu"]: gpu for gpu in status_view(snapshot, 100.0)["gpus"]}
    assert {index: gpu["up"] for index, gpu in gpus.items()} == {"0": True, "1": True, "2": False, "3": True}
    assert gpus["2"]["power_watts"] is None
    assert [m["profile"] for m in gpus["0"]["mig"]] == ["3g.40gb", "2g.20gb", "1g.10gb"]
    first = gpus["0"]["mig"][0]
    assert first["memory_total_bytes"] == 42144366592 and first["sm_count"] == 60 and first["gi_id"] == "2"
    assert gpus["1"]["mig"] == []
