"""Real Prometheus, a k8s_mode agent on sim:h100x8 and a kubelet's pod-resources API on a unix socket:
per-pod GPU energy adds up to the held GPUs' power."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubelet_pods import agent_with_pods, held_gpus_watts, pod_gpu_watts
from prometheus_process import prometheus

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("pod-energy")
    # No host procfs: the agent cannot tell whose a time-sliced GPU's processes are, so splits it equally.
    with (
        agent_with_pods(workdir, "--scrape-interval", "1") as agent_url,
        prometheus([agent_url.removeprefix("http://")], workdir) as url,
    ):
        yield url


def test_pod_energy_rates_sum_to_the_held_gpus_power(prometheus_url: str) -> None:
    by_pod = pod_gpu_watts(prometheus_url, full_window_samples=37)  # a sample each second
    assert set(by_pod) == {"trainer-0", "infer-a", "infer-b"}
    assert by_pod["infer-a"] == pytest.approx(by_pod["infer-b"], rel=1e-6)  # an equal split
    assert sum(by_pod.values()) == pytest.approx(held_gpus_watts(prometheus_url), rel=0.05)
