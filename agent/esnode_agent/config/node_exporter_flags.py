"""node_exporter's command-line spellings, translated into esnode's own flags.

A node_exporter DaemonSet or systemd unit keeps its arguments when it switches to esnode:
``--web.listen-address=:9100 --path.procfs=/host/proc --no-collector.hwmon`` work as written.
Collector switches map onto esnode's coarser ones (filesystem and diskstats are both
``enable_disk``; hwmon and rapl are both ``enable_power``). Switches and options of node_exporter
collectors esnode has no counterpart for are accepted and reported as ignored, never guessed at;
a collector name neither program knows is an error. See docs/migration.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from esnode_agent.config.sources import ConfigError

# Options whose value carries over unchanged (or through VALUE_MAPS).
OPTION_FLAGS = {
    "--web.listen-address": "--listen-address",
    "--web.telemetry-path": "--telemetry-path",
    "--web.config.file": "--web-config-file",
    "--path.procfs": "--path-procfs",
    "--path.sysfs": "--path-sysfs",
    "--path.rootfs": "--path-rootfs",
    "--log.level": "--log-level",
    "--log.format": "--log-format",
    "--collector.textfile.directory": "--textfile-directory",
    "--collector.filesystem.fs-types-exclude": "--filesystem-fstype-exclude",
    "--collector.diskstats.device-exclude": "--disk-device-exclude",
    "--collector.netdev.device-exclude": "--network-device-exclude",
}
VALUE_MAPS = {
    "--log-level": {"warn": "warning"},
    "--log-format": {"logfmt": "text"},  # esnode's text logs are logfmt
}
# Collector names, node_exporter's and esnode's own, and the switch each turns.
COLLECTOR_SWITCHES = {
    "cpu": "enable-cpu",
    "meminfo": "enable-memory",
    "memory": "enable-memory",
    "diskstats": "enable-disk",
    "filesystem": "enable-disk",
    "disk": "enable-disk",
    "netdev": "enable-network",
    "network": "enable-network",
    "hwmon": "enable-power",
    "rapl": "enable-power",
    "power": "enable-power",
    "gpu": "enable-gpu",
}
# node_exporter's other collectors (v1.8): accepted, ignored, reported.
NODE_EXPORTER_ONLY = frozenset(
    [
        "arp",
        "bcache",
        "bonding",
        "btrfs",
        "buddyinfo",
        "cgroups",
        "conntrack",
        "cpu_vulnerabilities",
        "cpufreq",
        "devstat",
        "dmi",
        "drbd",
        "drm",
        "edac",
        "entropy",
        "ethtool",
        "fibrechannel",
        "filefd",
        "hwmon_thermal",
        "infiniband",
        "interrupts",
        "ipvs",
        "ksmd",
        "lnstat",
        "loadavg",
        "logind",
        "mdadm",
        "meminfo_numa",
        "mountstats",
        "netclass",
        "netstat",
        "network_route",
        "nfs",
        "nfsd",
        "nvme",
        "os",
        "perf",
        "powersupplyclass",
        "pressure",
        "processes",
        "qdisc",
        "runit",
        "schedstat",
        "selinux",
        "slabinfo",
        "softirqs",
        "softnet",
        "stat",
        "supervisord",
        "sysctl",
        "systemd",
        "tapestats",
        "tcpstat",
        "textfile",
        "thermal_zone",
        "time",
        "timex",
        "udp_queues",
        "uname",
        "vmstat",
        "watchdog",
        "wifi",
        "xfs",
        "zfs",
        "zoneinfo",
    ]
)
DISABLE_DEFAULTS = "--collector.disable-defaults"
# Flags of node_exporter's web and runtime layers with no esnode meaning.
IGNORED_OPTIONS = frozenset(
    {"--web.max-requests", "--web.disable-exporter-metrics", "--path.udev.data", "--runtime.gomaxprocs"}
)
IGNORED_SWITCHES = frozenset({"--web.disable-exporter-metrics", "--web.systemd-socket"})


@dataclass
class Translation:
    argv: list[str]
    ignored: list[str] = field(default_factory=list)  # the caller logs them once logging is set up


def translate(argv: Sequence[str]) -> Translation:
    """esnode flags pass through; node_exporter spellings become esnode's; raises ConfigError."""
    out: list[str] = []
    ignored: list[str] = []
    switches: dict[str, bool] = {}
    disable_defaults = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, has_value, value = arg.partition("=")
        if arg == DISABLE_DEFAULTS:
            disable_defaults = True
        elif name in OPTION_FLAGS or name in IGNORED_OPTIONS:
            if not has_value:
                if not args:
                    raise ConfigError(f"{name} expects a value")
                value = args.pop(0)
            if name in IGNORED_OPTIONS:
                ignored.append(f"{name}={value}")
                continue
            ours = OPTION_FLAGS[name]
            out += [ours, VALUE_MAPS.get(ours, {}).get(value, value)]
        elif arg in IGNORED_SWITCHES:
            ignored.append(arg)
        elif arg.startswith(("--collector.", "--no-collector.")):
            collector = arg.removeprefix("--no-collector.").removeprefix("--collector.")
            if "." in collector and not has_value and args:
                arg = f"{arg}={args.pop(0)}"  # an option of a collector, its value apart
            _collector_flag(arg, switches, ignored)
        else:
            out.append(arg)
    if disable_defaults:
        switches = {
            switch: switches.get(switch, False) for switch in sorted(set(COLLECTOR_SWITCHES.values()))
        }
    out += [f"--{switch}" if on else f"--no-{switch}" for switch, on in switches.items()]
    return Translation(out, ignored)


def _collector_flag(arg: str, switches: dict[str, bool], ignored: list[str]) -> None:
    enable = arg.startswith("--collector.")
    collector = arg.removeprefix("--collector.").removeprefix("--no-collector.")
    base = collector.partition("=")[0]
    if base in COLLECTOR_SWITCHES:
        switches[COLLECTOR_SWITCHES[base]] = enable
    elif base.split(".")[0] in NODE_EXPORTER_ONLY | set(COLLECTOR_SWITCHES):
        ignored.append(arg)  # a collector esnode lacks, or an option of one it has but does not take
    else:
        raise ConfigError(f"{arg}: no collector {base!r} in esnode or node_exporter")
