"""Interface counters from /proc/net/dev and TCP segment counters from /proc/net/snmp."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil
import pytest
from collecting import collect

from esnode_agent.collectors.network import NetworkCollector, parse_snmp
from esnode_agent.cycle.collector import NoDataError
from esnode_agent.cycle.samples import SampleIndex

FIXTURE_PROC = Path(__file__).parents[1] / "fixtures" / "host" / "proc"
DEFAULT_EXCLUDE = r"^lo$"


def interfaces(samples: SampleIndex) -> set[str]:
    return {s.label("interface") for s in samples.named("esnode_network_rx_bytes_total")}


def test_loopback_is_excluded_by_default_and_every_other_interface_is_kept() -> None:
    samples = collect(NetworkCollector(FIXTURE_PROC, DEFAULT_EXCLUDE))

    assert interfaces(samples) == {"eth0", "docker0"}


def test_counters_come_from_their_receive_and_transmit_columns() -> None:
    samples = collect(NetworkCollector(FIXTURE_PROC, DEFAULT_EXCLUDE))

    # eth0's byte count touches the colon, as the kernel prints counts wider than the column.
    assert samples.value("esnode_network_rx_bytes_total", interface="eth0") == 4294967296000
    assert samples.value("esnode_network_tx_bytes_total", interface="eth0") == 2753619
    assert samples.value("esnode_network_rx_errors_total", interface="eth0") == 3
    assert samples.value("esnode_network_rx_dropped_total", interface="eth0") == 7
    assert samples.value("esnode_network_tx_errors_total", interface="eth0") == 1
    assert samples.value("esnode_network_tx_dropped_total", interface="eth0") == 2
    assert samples.value("esnode_network_tx_bytes_total", interface="docker0") == 1234


def test_exclusion_is_the_configured_regex() -> None:
    samples = collect(NetworkCollector(FIXTURE_PROC, r"^(docker|veth)"))

    assert interfaces(samples) == {"lo", "eth0"}


def test_tcp_segment_counters_from_snmp() -> None:
    samples = collect(NetworkCollector(FIXTURE_PROC, DEFAULT_EXCLUDE))

    assert samples.value("esnode_network_tcp_segments_sent_total") == 24624
    assert samples.value("esnode_network_tcp_segments_retransmitted_total") == 37


def test_missing_snmp_drops_only_tcp_counters(tmp_path: Path) -> None:
    proc = Path(shutil.copytree(FIXTURE_PROC, tmp_path / "proc"))
    (proc / "net" / "snmp").unlink()
    samples = collect(NetworkCollector(proc, DEFAULT_EXCLUDE))

    assert samples.named("esnode_network_tcp_segments_sent_total") == []
    assert interfaces(samples) == {"eth0", "docker0"}


def test_missing_net_dev_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError):
        collect(NetworkCollector(tmp_path, DEFAULT_EXCLUDE))


def test_parse_snmp_pairs_names_with_the_values_of_the_same_protocol() -> None:
    text = "Tcp: A B\nUdp: A B\nTcp: 1 2\nUdp: 3 4\n"

    assert parse_snmp(text, "Tcp") == {"A": 1, "B": 2}
    assert parse_snmp(text, "Icmp") == {}


def test_real_proc_has_psutils_interfaces_less_loopback() -> None:
    samples = collect(NetworkCollector(Path("/proc"), DEFAULT_EXCLUDE))
    after = psutil.net_io_counters(pernic=True)

    assert interfaces(samples) == set(after) - {"lo"}
    for nic in interfaces(samples):
        received = samples.value("esnode_network_rx_bytes_total", interface=nic)
        assert received is not None
        assert 0 <= received <= after[nic].bytes_recv
    sent = samples.value("esnode_network_tcp_segments_sent_total")
    retransmitted = samples.value("esnode_network_tcp_segments_retransmitted_total")
    assert sent is not None and retransmitted is not None
    assert 0 <= retransmitted <= sent


def test_the_hosts_interfaces_come_from_pid_1s_network_namespace(tmp_path: Path) -> None:
    """On the pod network with hostPID, <procfs>/net is the pod's namespace and <procfs>/1/net the host's."""
    proc = Path(shutil.copytree(FIXTURE_PROC, tmp_path / "proc"))
    own = proc / "net" / "dev"
    own.write_text(own.read_text().replace("docker0", "cali0"), encoding="ascii")
    host_net = proc / "1" / "net"
    host_net.mkdir()
    (host_net / "dev").write_text(
        (FIXTURE_PROC / "net" / "dev").read_text().replace("eth0", "ens5"), encoding="ascii"
    )
    (host_net / "snmp").write_text("Tcp: OutSegs RetransSegs\nTcp: 900 9\n", encoding="ascii")
    samples = collect(NetworkCollector(proc, DEFAULT_EXCLUDE))

    assert interfaces(samples) == {"ens5", "docker0"}
    assert samples.value("esnode_network_rx_bytes_total", interface="ens5") == 4294967296000
    assert samples.value("esnode_network_tcp_segments_sent_total") == 900
    assert samples.value("esnode_network_tcp_segments_retransmitted_total") == 9
