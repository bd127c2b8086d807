"""The node's identity series and logfmt text logs."""

from __future__ import annotations

import logging
import os

from collecting import collect

from esnode_agent.collectors.node_info import NodeInfoCollector
from esnode_agent.logging_setup import TextFormatter


def test_node_info_names_the_kubernetes_node_when_known_else_the_host() -> None:
    [known] = collect(NodeInfoCollector("gpu-node-7")).named("esnode_node_info")
    [host] = collect(NodeInfoCollector(None)).named("esnode_node_info")
    assert known.labels["nodename"] == "gpu-node-7"
    assert host.labels["nodename"] == os.uname().nodename
    assert host.labels["release"] == os.uname().release
    assert known.value == 1.0


def test_text_logs_are_logfmt_with_quoting_where_needed() -> None:
    record = logging.makeLogRecord(
        {
            "name": "esnode",
            "levelname": "WARNING",
            "msg": "file skipped",
            "file": "/a b.prom",
            "n": 3,
            "q": 'say "hi"',
        }
    )
    line = TextFormatter().format(record)
    pairs = line.split(" level=", 1)[1]
    assert pairs == 'warning logger=esnode msg="file skipped" file="/a b.prom" n=3 q="say \\"hi\\""'
    assert line.startswith('ts="')
