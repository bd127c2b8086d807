"""The agent's configuration model: every key, its default and its bounds.

Public: the operator renders it into the agents' ConfigMap. Loading and layering of sources
lives in ``config_sources``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode

from esnode_agent.config.url_credentials import redact_url, refuse_url_credentials
from esnode_agent.gpu.sim_profile import check_backend_spec
from esnode_agent.gpu.visibility import parse_device_list

DEFAULT_DISK_DEVICE_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
DEFAULT_FSTYPE_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660"
    r"|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs"
    r"|tracefs|tmpfs|ramfs|efivarfs|fuse\..*|nfsd|rootfs)$"
)

# Model efficiency: the counters recognised by default (docs/efficiency.md). TGI's generated
# tokens are a histogram, whose _sum is the token count.
DEFAULT_APP_TOKEN_COUNTERS = (
    "model_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "tgi_request_generated_tokens_sum",
)
DEFAULT_APP_REQUEST_COUNTERS = ("model_requests_total", "vllm:request_success_total", "tgi_request_success")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# A cycle costs about 4 ms of CPU: 0.1 s keeps a misconfigured agent under a twentieth of a core
# (1e-9 s was accepted and logged 2,000 warnings a second).
MIN_SCRAPE_INTERVAL_SECONDS = 0.1
HTTP_HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # RFC 9110 token; the operator's CRD uses it
_HEADER_NAME = re.compile(HTTP_HEADER_NAME_PATTERN)
# Keys whose values a config error never echoes.
SECRET_KEYS = frozenset({"otlp_headers"})


def _split_commas(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _comma_separated(value: object) -> object:
    """Flags and environment variables give a list as one comma-separated string."""
    return _split_commas(value) if isinstance(value, str) else value


def _pairs(text: str) -> list[tuple[str, str]]:
    """``KEY=VALUE,...``; the last ``=`` splits, since a URL key may hold one and values do not."""
    pairs = []
    for item in _split_commas(text):
        key, sep, value = item.rpartition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"expected TARGET=VALUE, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _name_by_target(value: object) -> object:
    return dict(_pairs(value)) if isinstance(value, str) else value


def _uuids_by_target(value: object) -> object:
    """A target repeats once per GPU: ``URL=GPU-a,URL=GPU-b``."""
    if not isinstance(value, str):
        return value
    uuids: dict[str, list[str]] = {}
    for target, uuid in _pairs(value):
        uuids.setdefault(target, []).append(uuid)
    return uuids


def _check_urls(urls: tuple[str, ...]) -> tuple[str, ...]:
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{redact_url(url)!r} is not an http(s) URL with a host")
        refuse_url_credentials(url)
    return tuple(dict.fromkeys(urls))


def _check_metric_names(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"{name!r} is not a Prometheus metric name")
    return names


def _otlp_headers(value: object) -> object:
    """``NAME=VALUE,...`` as in OTEL_EXPORTER_OTLP_HEADERS: the first ``=`` splits (base64 values end
    in ``=``) and values are percent-decoded, so a comma is written ``%2C``."""
    if not isinstance(value, str):
        return value
    headers = {}
    for item in _split_commas(value):
        name, sep, header_value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError("expected NAME=VALUE,... (values not shown: they may be secrets)")
        headers[name.strip()] = unquote(header_value.strip())
    return headers


def _check_header_names(headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
    for name in headers:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not an HTTP header name")
    return headers


def check_otlp_endpoint(url: str) -> str:
    """An http(s) URL with a host, no user info, query or fragment; raises ValueError saying why."""
    _check_urls((url,))
    return url


AppUrls = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated), AfterValidator(_check_urls)]
MetricNames = Annotated[
    tuple[str, ...], NoDecode, BeforeValidator(_comma_separated), AfterValidator(_check_metric_names)
]
ModelNameByTarget = Annotated[dict[str, str], NoDecode, BeforeValidator(_name_by_target)]
GpuUuidsByTarget = Annotated[dict[str, tuple[str, ...]], NoDecode, BeforeValidator(_uuids_by_target)]
# Public: the operator's EsnodeFleet checks spec.otlp.endpoint with the agent's own rule.
OtlpEndpoint = Annotated[str, AfterValidator(check_otlp_endpoint)]
# Values are secrets (API keys): SecretStr keeps them out of `esnode-agent config`, reprs and errors.
OtlpHeaders = Annotated[
    dict[str, SecretStr], NoDecode, BeforeValidator(_otlp_headers), AfterValidator(_check_header_names)
]


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; raises ValueError with the reason."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    host = host.removeprefix("[").removesuffix("]")
    if host and host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None
    return host or "0.0.0.0", port


class AgentConfig(BaseModel):
    """Effective agent settings. Unknown keys are rejected so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_address: str = Field("0.0.0.0:9100", description="HOST:PORT that serves /metrics")
    web_config_file: Path | None = Field(
        None, description="exporter-toolkit web config (TLS, basic auth, headers) for every endpoint"
    )
    max_event_clients: int = Field(
        64, ge=1, le=10000, description="Concurrent /events (Server-Sent Events) clients; more get 503"
    )
    # Slow or idle clients cannot hold the server (serve/connection_limits.py).
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="A request (head, any body) must arrive within this, or is closed"
    )
    http_max_connections: int = Field(
        512, ge=2, le=65536, description="Open connections; past it a new one closes the longest-idle one"
    )
    # Kubernetes-native protection (serve/kube_auth.py): bearer tokens checked with TokenReview and
    # SubjectAccessReview (get on the request path), as kube-rbac-proxy does.
    metrics_auth: Literal["none", "kubernetes"] = Field(
        "none", description="kubernetes: every endpoint needs a bearer token allowed `get` on its path"
    )
    metrics_auth_cache_seconds: float = Field(
        60.0, gt=0, le=3600, description="How long a token's review decision is reused"
    )
    telemetry_path: str = Field(
        "/metrics", pattern=r"^/[^?#\s]*$", description="Path of the Prometheus exposition (node_exporter's)"
    )
    scrape_interval_seconds: float = Field(
        5.0, ge=MIN_SCRAPE_INTERVAL_SECONDS, le=3600, description="Collection period"
    )
    collector_timeout_seconds: float | None = Field(
        None, gt=0, le=600, description="A collector running longer is skipped; unset: min(3 s, interval)"
    )

    enable_cpu: bool = True
    enable_memory: bool = True
    enable_disk: bool = True
    enable_network: bool = True
    enable_power: bool = True
    enable_gpu: bool = True
    textfile_directory: Path | None = Field(
        None,
        description="Directory whose *.prom files are merged into the exposition (node_exporter's textfile)",
    )

    # Power: node power source and budget.
    node_power_envelope_watts: float | None = Field(
        None, gt=0, description="Node power budget; unset means no envelope"
    )
    node_power_sensor: str | None = Field(
        None,
        pattern=r"^[^/\s]+/power\d+$",
        description="hwmon CHIP/SENSOR measuring whole-node power (e.g. acpi_power_meter/power1), "
        "used as the node power source instead of detection by chip name",
    )

    # GPU: backend, which devices, MIG, XID events, Kubernetes labels and pod attribution.
    gpu_backend: str = Field(
        "nvml",
        description="nvml, or sim:PROFILE to simulate GPUs (built-in h100x8, h100-mig, or a JSON path)",
    )
    gpu_visible_devices: str | None = Field(
        None,
        description="GPUs to read: all, none, void, or CSV of indices, GPU-/MIG- UUIDs; "
        "unset: NVIDIA_VISIBLE_DEVICES, else all",
    )
    mig_config_devices: str | None = Field(
        None,
        description="GPUs whose MIG devices are read: all, none, or CSV of indices, GPU- UUIDs; "
        "unset: NVIDIA_MIG_CONFIG_DEVICES, else all",
    )
    enable_gpu_mig: bool = Field(True, description="Read the MIG devices of GPUs in MIG mode")
    enable_gpu_events: bool = Field(False, description="Count XID errors in an NVML event loop (best effort)")
    k8s_mode: bool = Field(
        False, description="Label GPU and MIG series with their Kubernetes resource and the pod holding them"
    )
    pod_resources_socket: Path = Field(
        Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
        description="kubelet pod-resources API socket, for pod attribution in k8s_mode",
    )
    pod_resources_refresh_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often pod attribution is refreshed, off the collection path"
    )
    # GPU: dcgm-exporter-compatible series (issue 14).
    gpu_dcgm_compat: bool = Field(
        False, description="Also serve dcgm-exporter's default DCGM_FI_* families and label names"
    )
    # GPU: per-process series (issue 14).
    gpu_process_top_n: int = Field(
        10,
        ge=0,
        le=1000,
        description="Compute processes per GPU with their own series (most memory first); 0: none",
    )

    @field_validator("gpu_backend")
    @classmethod
    def _check_gpu_backend(cls, value: str) -> str:
        return check_backend_spec(value)

    @field_validator("gpu_visible_devices")
    @classmethod
    def _check_visible_devices(cls, value: str | None) -> str | None:
        if value is not None:
            parse_device_list(value, allow_mig=True)
        return value

    @field_validator("mig_config_devices")
    @classmethod
    def _check_mig_config_devices(cls, value: str | None) -> str | None:
        if value is not None:
            parse_device_list(value, allow_mig=False)
        return value

    # Model efficiency: model servers' token and request counters per joule (docs/efficiency.md).
    app_metrics_urls: AppUrls = Field(
        (), description="Model servers' Prometheus endpoints on this node, comma-separated; none: off"
    )
    app_metrics_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Fetch timeout per endpoint, capped at 3/4 of the collector timeout"
    )
    app_token_counters: MetricNames = Field(
        DEFAULT_APP_TOKEN_COUNTERS,
        description="Token counters (or histogram _sum samples); replaces the defaults",
    )
    app_request_counters: MetricNames = Field(
        DEFAULT_APP_REQUEST_COUNTERS, description="Request counters, successes only; replaces the defaults"
    )
    app_model_names: ModelNameByTarget = Field(
        default_factory=dict, description="URL=MODEL,...: model of an endpoint whose counters name none (TGI)"
    )
    app_gpu_uuids: GpuUuidsByTarget = Field(
        default_factory=dict,
        description="URL=GPU_UUID,... (a URL once per GPU): GPUs an endpoint's server uses",
    )
    app_efficiency_window_seconds: float = Field(
        60.0, gt=0, le=3600, description="Window of the per-joule and per-second efficiency figures"
    )

    # Model efficiency, hostile-input bounds (issue 18): what one endpoint may cost per fetch.
    app_max_body_bytes: int = Field(
        8 * 2**20,
        ge=1024,
        le=2**30,
        description="Largest exposition read from an endpoint, counted after gzip",
    )
    app_max_models_per_target: int = Field(
        1000, ge=1, le=100_000, description="Models read per endpoint; the rest are dropped and counted"
    )
    app_max_remembered_models: int = Field(
        5000, ge=1, le=1_000_000, description="Models whose totals are kept; the least recently seen go first"
    )

    @model_validator(mode="after")
    def _app_settings_name_known_urls(self) -> AgentConfig:
        for key in ("app_model_names", "app_gpu_uuids"):
            unknown = sorted(set(getattr(self, key)) - set(self.app_metrics_urls))
            if unknown:
                raise ValueError(f"{key} names {unknown[0]!r}, which is not in app_metrics_urls")
        return self

    @property
    def effective_app_metrics_timeout_seconds(self) -> float:
        """Below the loop's timeout for the whole collector, which also parses what arrived."""
        return min(self.app_metrics_timeout_seconds, 0.75 * self.effective_collector_timeout_seconds)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"

    path_procfs: Path = Field(Path("/proc"), description="procfs mount point (host's, in a container)")
    path_sysfs: Path = Field(Path("/sys"), description="sysfs mount point")
    path_rootfs: Path = Field(Path("/"), description="Root of the host filesystem, for mount paths")

    network_device_exclude: str = Field(r"^lo$", description="Regex of interfaces to skip")
    disk_device_exclude: str = Field(
        DEFAULT_DISK_DEVICE_EXCLUDE, description="Regex of block devices to skip (partitions)"
    )
    filesystem_fstype_exclude: str = Field(
        DEFAULT_FSTYPE_EXCLUDE, description="Regex of filesystem types to skip (pseudo filesystems)"
    )

    degradation_disk_latency_seconds: float = Field(
        0.05, gt=0, description="Mean time per completed disk I/O above which disk_latency is set"
    )
    degradation_disk_busy_ratio: float = Field(
        0.9, gt=0, le=1, description="Fraction of the interval a disk was busy above which disk_busy is set"
    )
    degradation_network_drops_per_second: float = Field(
        1.0, ge=0, description="Dropped packets per second (all interfaces) above which network_drops is set"
    )
    degradation_network_retrans_ratio: float = Field(
        0.02, gt=0, le=1, description="TCP retransmitted / sent segments above which network_retrans is set"
    )
    degradation_swap_in_bytes_per_second: float = Field(
        1048576.0, ge=0, description="Swap-in rate above which swap_spike is set"
    )

    # Node report: the node's EsnodeNode status (and optionally a Node condition). On in a pod
    # with NODE_NAME and a fleet; off a cluster with kubeconfig, node_name, namespace and fleet.
    kubeconfig: Path | None = Field(None, description="kubeconfig for reporting from outside a cluster")
    node_name: str | None = Field(None, description="This node's name; in a pod NODE_NAME is used when unset")
    namespace: str | None = Field(None, description="Namespace of the fleet; in a pod, the pod's namespace")
    fleet: str | None = Field(
        None, description="EsnodeFleet this agent belongs to; unset turns reporting off"
    )
    fleet_uid: str | None = Field(None, description="The fleet's uid: EsnodeNode objects are owned by it")
    report_heartbeat_seconds: float = Field(60.0, ge=5, le=3600, description="Report at least this often")
    report_power_step_watts: float = Field(
        50.0, gt=0, description="Report early when node power moves by more than this"
    )
    report_min_interval_seconds: float = Field(
        5.0, ge=0, description="Early reports (edges) are at least this far apart"
    )
    node_condition: bool = Field(False, description="Also set the Node condition EsnodePowerEnvelopeExceeded")

    # Power capping (docs/power.md): opt-in, bounded by each GPU's constraints, undone on exit.
    power_capping: Literal["off", "advise", "enforce"] = Field(
        "off", description="Hold node power under the envelope with GPU power limits: advise or enforce"
    )
    power_capping_hysteresis_watts: float = Field(
        50.0,
        gt=0,
        description="The GPUs' limits sum to this far under the envelope minus the rest of the node",
    )
    power_capping_hold_seconds: float = Field(
        10.0,
        ge=0,
        description="A GPU keeps room for the most it drew this long; with no envelope, no raise sooner "
        "than this after a cut",
    )
    power_capping_step_watts: float = Field(
        25.0, gt=0, description="Room a GPU gets above its peak; the least change of a limit written"
    )
    power_capping_state_dir: Path = Field(
        Path("/var/lib/esnode"), description="Where the limits esnode set are remembered, for restore"
    )

    @model_validator(mode="after")
    def _capping_needs_envelope(self) -> AgentConfig:
        # A fleet's agent may get its envelope from the fleet's power budget (its EsnodeNode's spec);
        # until one arrives the capper holds (docs/power.md). runtime.py checks the report is on.
        if self.power_capping != "off" and self.node_power_envelope_watts is None and not self.fleet:
            raise ValueError(
                f"power_capping={self.power_capping} needs node_power_envelope_watts, or a fleet to report "
                "to (an envelope from its power budget)"
            )
        return self

    # Local history (standalone use, docs in README "Standalone on one GPU box"): every cycle's
    # samples in a SQLite file, exported for Prometheus backfill at /tsdb/export.
    enable_local_tsdb: bool = Field(False, description="Keep every cycle's samples on local disk")
    local_tsdb_path: Path | None = Field(
        None, description="Directory of the history database; unset: $XDG_DATA_HOME/esnode/tsdb"
    )
    local_tsdb_retention_hours: float = Field(48.0, gt=0, le=24 * 366, description="History kept, by age")
    local_tsdb_max_disk_mb: float = Field(
        2048.0, ge=1, description="History kept, by size: oldest goes first"
    )
    local_tsdb_flush_seconds: float = Field(
        30.0, ge=0.1, le=3600, description="How often history is written; a crash loses at most this much"
    )

    @field_validator("network_device_exclude", "disk_device_exclude", "filesystem_fstype_exclude")
    @classmethod
    def _check_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("listen_address")
    @classmethod
    def _check_listen_address(cls, value: str) -> str:
        split_host_port(value)
        return value

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> AgentConfig:
        timeout = self.collector_timeout_seconds
        if timeout is not None and timeout > self.scrape_interval_seconds:
            raise ValueError(
                f"collector_timeout_seconds ({self.collector_timeout_seconds}) must not exceed "
                f"scrape_interval_seconds ({self.scrape_interval_seconds})"
            )
        return self

    @model_validator(mode="after")
    def _event_clients_within_connections(self) -> AgentConfig:
        # An event stream is never closed to make room: they alone must not fill every connection.
        if self.max_event_clients >= self.http_max_connections:
            raise ValueError(
                f"max_event_clients ({self.max_event_clients}) must be below "
                f"http_max_connections ({self.http_max_connections})"
            )
        return self

    @property
    def effective_collector_timeout_seconds(self) -> float:
        if self.collector_timeout_seconds is not None:
            return self.collector_timeout_seconds
        return min(3.0, self.scrape_interval_seconds)

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen_address)

    # OTLP push (docs/otlp.md): opt-in; each cycle's snapshot pushed as OTLP metrics over HTTP.
    otlp_endpoint: OtlpEndpoint | None = Field(
        None, description="OTLP/HTTP receiver; /v1/metrics is appended unless the path ends in it; unset: off"
    )
    otlp_interval_seconds: float = Field(
        60.0, ge=MIN_SCRAPE_INTERVAL_SECONDS, le=3600, description="Push at most this often, a cycle's values"
    )
    otlp_headers: OtlpHeaders = Field(
        default_factory=dict, description="NAME=VALUE,... sent with every push (secrets: never shown)"
    )
    otlp_timeout_seconds: float = Field(10.0, gt=0, le=300, description="Timeout of one push request")
    otlp_ca_file: Path | None = Field(
        None, description="CA bundle that verifies the receiver; unset: system CAs"
    )
    otlp_cert_file: Path | None = Field(None, description="Client certificate for mutual TLS")
    otlp_key_file: Path | None = Field(None, description="Client certificate's key")
    otlp_insecure_skip_verify: bool = Field(
        False, description="Accept any receiver certificate (testing only)"
    )

    @model_validator(mode="after")
    def _otlp_client_cert_pair(self) -> AgentConfig:
        if (self.otlp_cert_file is None) != (self.otlp_key_file is None):
            raise ValueError("otlp_cert_file and otlp_key_file go together")
        return self
