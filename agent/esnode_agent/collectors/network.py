"""Per-interface traffic counters from net/dev; TCP segment counters from net/snmp.

Both are read from ``<procfs>/1/net/`` first: with the host's PID namespace that is the host's network
namespace, so an agent on the pod network still reports the node's interfaces. ``<procfs>/net/``
(the agent's own namespace) is the fallback where PID 1's files cannot be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.collectors.procfs import host_view, parse_count, read_first
from esnode_agent.cycle.collector import STAGE_READ, NoDataError
from esnode_agent.cycle.samples import SampleSink, counter

RX_BYTES = counter("esnode_network_rx_bytes_total", "Bytes received on the interface.", "interface")
TX_BYTES = counter("esnode_network_tx_bytes_total", "Bytes sent on the interface.", "interface")
RX_ERRORS = counter("esnode_network_rx_errors_total", "Receive errors on the interface.", "interface")
TX_ERRORS = counter("esnode_network_tx_errors_total", "Transmit errors on the interface.", "interface")
RX_DROPPED = counter(
    "esnode_network_rx_dropped_total", "Received packets dropped on the interface.", "interface"
)
TX_DROPPED = counter(
    "esnode_network_tx_dropped_total", "Packets to send dropped on the interface.", "interface"
)
TCP_SEGMENTS_SENT = counter(
    "esnode_network_tcp_segments_sent_total", "TCP segments sent, as the kernel counts them (Tcp OutSegs)."
)
TCP_SEGMENTS_RETRANSMITTED = counter(
    "esnode_network_tcp_segments_retransmitted_total", "TCP segments retransmitted (Tcp RetransSegs)."
)


@dataclass(frozen=True, slots=True)
class InterfaceCounters:
    interface: str
    rx_bytes: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[InterfaceCounters]:
    """Lines ``name: 8 receive columns, 8 transmit columns``, after two header lines."""
    interfaces = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            continue
        rx_bytes, _, rx_errs, rx_drop = (parse_count(f) for f in fields[0:4])
        tx_bytes, _, tx_errs, tx_drop = (parse_count(f) for f in fields[8:12])
        interfaces.append(
            InterfaceCounters(name.strip(), rx_bytes, rx_errs, rx_drop, tx_bytes, tx_errs, tx_drop)
        )
    return interfaces


def parse_snmp(text: str, protocol: str) -> dict[str, int]:
    """One protocol's counters: snmp has a header line of names and then a line of values."""
    prefix = protocol + ":"
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith(prefix)]
    if len(rows) < 2:
        return {}
    names, values = rows[0], rows[1]
    return {name: int(value) for name, value in zip(names, values, strict=False)}


class NetworkCollector:
    name = "network"
    stage = STAGE_READ

    def __init__(self, procfs: Path, device_exclude: str) -> None:
        self._dev_paths = host_view(procfs, "net", "dev")
        self._snmp_paths = host_view(procfs, "net", "snmp")
        self._exclude = re.compile(device_exclude)

    def collect(self, sink: SampleSink) -> None:
        for nic in parse_net_dev(read_first(self._dev_paths)):
            if self._exclude.search(nic.interface):
                continue
            sink.add(RX_BYTES, nic.rx_bytes, interface=nic.interface)
            sink.add(TX_BYTES, nic.tx_bytes, interface=nic.interface)
            sink.add(RX_ERRORS, nic.rx_errors, interface=nic.interface)
            sink.add(TX_ERRORS, nic.tx_errors, interface=nic.interface)
            sink.add(RX_DROPPED, nic.rx_dropped, interface=nic.interface)
            sink.add(TX_DROPPED, nic.tx_dropped, interface=nic.interface)
        self._add_tcp(sink)

    def _add_tcp(self, sink: SampleSink) -> None:
        try:
            tcp = parse_snmp(read_first(self._snmp_paths), "Tcp")
        except NoDataError:
            tcp = {}
        if "OutSegs" in tcp and "RetransSegs" in tcp:
            sink.add(TCP_SEGMENTS_SENT, tcp["OutSegs"])
            sink.add(TCP_SEGMENTS_RETRANSMITTED, tcp["RetransSegs"])
