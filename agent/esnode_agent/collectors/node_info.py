"""The node's identity as one info series, like node_exporter's node_uname_info.

Dashboards pick nodes by name through this series (``on(instance) group_left(nodename)``) rather
than by scrape address, which is a pod or node IP. In Kubernetes ``nodename`` is the node's name
(node_name, set from the downward API), since a pod off the host network has its own host name.
"""

from __future__ import annotations

import os

from esnode_agent.cycle.collector import STAGE_READ
from esnode_agent.cycle.samples import SampleSink, gauge

NODE_INFO = gauge(
    "esnode_node_info",
    "Node identity, value 1: nodename (the Kubernetes node name where known, else the host name) and "
    "the kernel's uname fields.",
    "nodename",
    "sysname",
    "release",
    "version",
    "machine",
)


class NodeInfoCollector:
    name = "node_info"
    stage = STAGE_READ

    def __init__(self, node_name: str | None) -> None:
        uname = os.uname()
        self._labels = {
            "nodename": node_name or uname.nodename,
            "sysname": uname.sysname,
            "release": uname.release,
            "version": uname.version,
            "machine": uname.machine,
        }

    def collect(self, sink: SampleSink) -> None:
        sink.add(NODE_INFO, 1.0, **self._labels)
