"""The esnode.io/v1alpha1 API: EsnodeFleet spec and status, EsnodeNode spec, as typed models.

Field names are snake_case in Python and camelCase on the wire (Kubernetes conventions). The CRD's
OpenAPI schema is generated from these models (``crd.py``), so bounds, enums and CEL rules written
here are what the apiserver enforces; the operator parses every fleet with the same models.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from esnode_agent import __version__
from esnode_agent.config.model import HTTP_HEADER_NAME_PATTERN, MIN_SCRAPE_INTERVAL_SECONDS, OtlpEndpoint

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/esnode/esnode-agent"
DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
MAX_WATTS = 1_000_000.0

LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # DNS-1035: what a Service name must be
# Go-style durations (what CEL's duration() parses), the subset of Prometheus' syntax both accept.
DURATION_PATTERN = r"^((([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
GPU_LIST_PATTERN = r"^(all|none|void|[A-Za-z0-9:-]+(,[A-Za-z0-9:-]+)*)$"

LabelKey = Annotated[str, StringConstraints(max_length=317, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
DnsName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
Duration = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=DURATION_PATTERN)]
Quantity = Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY_PATTERN)] | int
ResourceName = Annotated[str, StringConstraints(max_length=317)]
Watts = Annotated[float, Field(gt=0, le=MAX_WATTS)]
FreeForm = dict[str, Any]

MAX_LABELS = 32
_DURATION_PART = re.compile(r"([0-9]+)(ms|h|m|s)")
_DURATION_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(text: str) -> float:
    """Seconds in a duration of the DURATION_PATTERN form (``1m30s``, ``500ms``)."""
    return sum(int(n) * _DURATION_UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One x-kubernetes-validations entry; the apiserver reports ``message`` on a violation."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class CamelModel(BaseModel):
    """camelCase on the wire, unknown fields rejected, immutable once parsed."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class Toleration(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self.operator == 'Exists' || has(self.key)", "a toleration with operator Equal needs a key"),
            cel(
                "self.operator == 'Equal' || !has(self.value)",
                "a toleration with operator Exists takes no value",
            ),
        )
    )

    key: Annotated[str, StringConstraints(max_length=317)] | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _operator_matches_key_and_value(self) -> Toleration:
        if self.operator == "Equal" and self.key is None:
            raise ValueError("a toleration with operator Equal needs a key")
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists takes no value")
        return self


class LocalObjectReference(CamelModel):
    name: DnsName


def _quantities(**amounts: str | int) -> dict[str, str | int]:
    return amounts


class Resources(CamelModel):
    """Container resources; quantities as Kubernetes writes them (100m, 128Mi, 1)."""

    limits: dict[ResourceName, Quantity] = Field(default=_quantities(memory="256Mi"), max_length=16)
    requests: dict[ResourceName, Quantity] = Field(
        default=_quantities(cpu="50m", memory="64Mi"), max_length=16
    )


class EnvVar(CamelModel):
    """An extra environment variable for the agent container (ESNODE_<KEY> sets any agent key)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!has(self.value) || !has(self.valueFrom)", "set value or valueFrom, not both")
        )
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)]
    value: Annotated[str, StringConstraints(max_length=4096)] | None = None
    value_from: FreeForm | None = Field(None, description="As in a container's env[].valueFrom")

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self


class Collectors(CamelModel):
    """Which agent collectors run (each is the agent's enable_<name> key)."""

    cpu: bool = True
    memory: bool = True
    disk: bool = True
    network: bool = True
    power: bool = True
    gpu: bool = True


# ---- issue 19: specs that could never deploy are refused by the schema ---------------------------
# The pod-resources socket's folder is mounted at its own path: a socket directly under / would
# mount the host's root, and one under these would shadow the agent's own mounts (daemonset.py).
AGENT_MOUNT_ROOTS = ("/dev", "/proc", "/sys", "/host", "/etc/esnode")
# At least two components (the folder is not /), none of them . or ..
SOCKET_PATH_PATTERN = r"^(/(\.?[^./\s][^/\s]*|\.\.[^/\s]+))+/[^/\s]+$"


class GpuOptions(CamelModel):
    visible_devices: Annotated[str, StringConstraints(max_length=1024, pattern=GPU_LIST_PATTERN)] = Field(
        "all",
        description="GPUs the agent sees (NVIDIA_VISIBLE_DEVICES): all, none, or indexes/UUIDs separated by commas",
    )
    mig: bool = Field(True, description="Collect per-MIG-instance metrics of GPUs in MIG mode")
    k8s_mode: bool = Field(
        True,  # in a cluster, GPU series name the pod holding the GPU, as dcgm-exporter's do
        alias="k8sMode",  # to_camel would say k8SMode
        description="Attribute GPUs to pods through the kubelet's pod-resources socket (mounted read-only)",
    )
    pod_resources_socket: Annotated[str, StringConstraints(max_length=1024, pattern=SOCKET_PATH_PATTERN)] = (
        Field(
            DEFAULT_POD_RESOURCES_SOCKET,
            description="Path of the kubelet pod-resources socket on the node (its folder is mounted at the same "
            "path: not /, nor under the agent's own mounts " + ", ".join(AGENT_MOUNT_ROOTS) + ")",
            json_schema_extra=validations(
                cel(
                    " && ".join(f"!self.startsWith('{root}/')" for root in AGENT_MOUNT_ROOTS),
                    "podResourcesSocket must not lie under "
                    + ", ".join(AGENT_MOUNT_ROOTS)
                    + ": its folder's mount would shadow one of the agent's",
                )
            ),
        )
    )
    dcgm_compat: bool = Field(
        False,
        description="Also serve dcgm-exporter's DCGM_FI_* metric names and labels, for its dashboards and alerts",
    )
    process_top_n: int = Field(
        10,
        ge=0,
        le=1000,
        description="Compute processes per GPU with their own series, most GPU memory first; 0 turns them off",
    )

    @field_validator("pod_resources_socket")
    @classmethod
    def _socket_shadows_no_mount(cls, path: str) -> str:
        if any(path.startswith(root + "/") for root in AGENT_MOUNT_ROOTS):
            raise ValueError(
                "podResourcesSocket must not lie under "
                + ", ".join(AGENT_MOUNT_ROOTS)
                + ": its folder's mount would shadow one of the agent's"
            )
        return path


class LabelSelectorRequirement(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : size(self.values) == 0",
                "In and NotIn need values; Exists and DoesNotExist take none",
            )
        )
    )

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = Field(default=[], max_length=64)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError("In and NotIn need values; Exists and DoesNotExist take none")
        return self


class NodeLabelSelector(CamelModel):
    """Nodes by their labels, as a Kubernetes LabelSelector; both parts must hold."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "size(self.matchLabels) + size(self.matchExpressions) > 0",
                "an override's nodeSelector must name at least one label",
            )
        )
    )

    match_labels: dict[LabelKey, LabelValue] = Field(default={}, max_length=MAX_LABELS)
    match_expressions: list[LabelSelectorRequirement] = Field(default=[], max_length=MAX_LABELS)

    @model_validator(mode="after")
    def _not_empty(self) -> NodeLabelSelector:
        if not self.match_labels and not self.match_expressions:
            raise ValueError("an override's nodeSelector must name at least one label")
        return self


class EnvelopeOverride(CamelModel):
    node_selector: NodeLabelSelector
    watts: Watts


class PowerEnvelope(CamelModel):
    """Node power budgets: a default, and overrides for nodes matching a selector (first match wins)."""

    model_config = ConfigDict(
        json_schema_extra=validations(  # issue 19: a second identical selector would be ignored
            cel(
                "!has(self.overrides) || self.overrides.all(o, self.overrides.filter(p, p.nodeSelector == o.nodeSelector).size() == 1)",
                "two overrides have the same nodeSelector: the second would never apply",
                ".overrides",
            )
        )
    )

    default_watts: Watts | None = Field(None, description="Budget of nodes no override selects; unset: none")
    overrides: list[EnvelopeOverride] = Field(default=[], max_length=16)

    @model_validator(mode="after")
    def _distinct_selectors(self) -> PowerEnvelope:
        selectors = [override.node_selector for override in self.overrides]
        if any(selectors.count(selector) > 1 for selector in selectors):
            raise ValueError("two overrides have the same nodeSelector: the second would never apply")
        return self


# Fleet power budget (issue 16): the operator shares totalWatts out as per-node envelopes.
DEFAULT_FLOOR_WATTS = 1000.0
DEFAULT_CEILING_WATTS = 12000.0


class PowerBudget(CamelModel):
    """A feed the fleet must stay under, shared out as envelopes written into each EsnodeNode's spec."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.floorWatts) || !has(self.ceilingWatts) || self.floorWatts <= self.ceilingWatts",
                "powerBudget.floorWatts must not exceed ceilingWatts",
                ".floorWatts",
            )
        )
    )

    total_watts: Watts | None = Field(None, description="The fleet's feed; unset: no budget (off)")
    floor_watts: Watts = Field(
        DEFAULT_FLOOR_WATTS,
        description="The least envelope a node gets; a node's own floor (its GPUs' minimum limits plus the "
        "rest of the node, from its report) wins when higher",
    )
    ceiling_watts: Watts = Field(
        DEFAULT_CEILING_WATTS,
        description="The most a node gets; a node's own ceiling (its GPUs' maximum limits plus the rest) "
        "wins when lower; reserved for a node that stopped reporting",
    )

    @model_validator(mode="after")
    def _floor_within_ceiling(self) -> PowerBudget:
        if self.floor_watts > self.ceiling_watts:
            raise ValueError("powerBudget.floorWatts must not exceed ceilingWatts")
        return self


class PowerCapping(CamelModel):
    """Opt-in GPU power capping by the agents (docs/power.md): each holds its node under its envelope,
    the static one or the one the fleet's power budget gives it."""

    mode: Literal["off", "advise", "enforce"] = Field(
        "off", description="off; advise: compute and export the limits; enforce: set them (restored on exit)"
    )
    hysteresis_watts: float = Field(
        50.0,
        gt=0,
        le=MAX_WATTS,
        description="The GPUs' limits sum to this far under the envelope minus the rest of the node",
    )
    hold_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="A GPU keeps room for the most it drew this long; with no envelope, no raise sooner "
        "than this after a cut",
    )
    step_watts: float = Field(
        25.0,
        gt=0,
        le=MAX_WATTS,
        description="Room a GPU gets above its peak; the least change of a limit written",
    )


# ---- issue 15: scrapes behind Kubernetes' own authn/authz, and over TLS ---------------------------
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # a key of a Secret's data
SecretKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)]


class SecretKeySelector(CamelModel):
    """A key of a Secret in the fleet's namespace."""

    name: DnsName
    key: SecretKey


class ScrapeAuthorization(CamelModel):
    """Prometheus Operator's endpoint authorization: a bearer token read from a Secret."""

    credentials: SecretKeySelector = Field(
        description="The token, e.g. a kubernetes.io/service-account-token Secret's key token"
    )


class MetricsTLS(CamelModel):
    """The agents serve HTTPS with a certificate from a Secret (cert-manager's Certificate writes one)."""

    secret_name: DnsName = Field(
        description="Secret in the fleet's namespace with tls.crt and tls.key, and the CA under caKey"
    )
    ca_key: SecretKey = Field(
        "ca.crt",
        description="Key of the Secret holding the CA Prometheus verifies the agents' certificate with",
    )
    server_name: DnsName | None = Field(
        None,
        description="Name Prometheus expects in the agents' certificate; unset: the fleet's Service, "
        "esnode-<fleet>.<namespace>.svc",
    )


class ServiceMonitorSpec(CamelModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.interval) || duration(self.interval) > duration('0s')",
                "interval must be longer than 0s",
                ".interval",
            ),
            cel(
                "!has(self.interval) || !has(self.scrapeTimeout)"
                " || duration(self.scrapeTimeout) <= duration(self.interval)",
                "scrapeTimeout must not exceed interval",
                ".scrapeTimeout",
            ),
        )
    )

    enabled: bool = Field(True, description="Create a ServiceMonitor (needs the Prometheus Operator CRDs)")
    interval: Duration | None = Field(
        None, description="Scrape interval; unset: the agent's collection period"
    )
    scrape_timeout: Duration | None = None
    labels: dict[LabelKey, LabelValue] = Field(
        default={},
        max_length=MAX_LABELS,
        description="Extra labels, e.g. the one your Prometheus' serviceMonitorSelector wants",
    )
    relabelings: list[FreeForm] = Field(
        default=[],
        max_length=32,
        description="Prometheus Operator RelabelConfigs, applied as given",
    )
    authorization: ScrapeAuthorization | None = Field(
        None,
        description="With metricsAuth kubernetes: the token Prometheus sends, from a Secret; unset: "
        "Prometheus' own ServiceAccount token (bearerTokenFile), as kube-prometheus scrapes the kubelet",
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ServiceMonitorSpec:
        if self.interval is not None and duration_seconds(self.interval) <= 0:
            raise ValueError("interval must be longer than 0s")
        if (
            self.interval is not None
            and self.scrape_timeout is not None
            and duration_seconds(self.scrape_timeout) > duration_seconds(self.interval)
        ):
            raise ValueError("scrapeTimeout must not exceed interval")
        return self


class ReportSettings(CamelModel):
    """How often each agent writes its node report (its EsnodeNode status) to the cluster."""

    heartbeat_seconds: float = Field(
        60.0, ge=5, le=3600, description="Report at least this often; a node silent for 3 heartbeats is stale"
    )
    power_step_watts: float = Field(
        50.0, gt=0, le=MAX_WATTS, description="Report early when node power moves by more than this"
    )


class AgentSettings(CamelModel):
    """Agent settings without a place of their own in the spec; set any other key with env ESNODE_<KEY>."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    collector_timeout_seconds: float | None = Field(
        None, gt=0, le=600, description="A collector running longer is skipped; unset: the agent's default"
    )


# ---- OTLP push (docs/otlp.md): every agent pushes its cycles to a receiver ------------------------
# The apiserver's early check of an endpoint's shape; the agent's own rule (OtlpEndpoint) decides,
# and what passes this but not that holds the fleet with InvalidSpec.
_OTLP_ENDPOINT_SHAPE = r"(?i)^https?://[^/?#@\\s]+(/[^?#\\s]*)?$"
_OTLP_ENDPOINT_MESSAGE = (
    "otlp.endpoint must be an http(s) URL with a host, without user info, query or fragment"
)
MAX_OTLP_HEADERS = 16


class OtlpHeader(CamelModel):
    """A header sent with every push; the kubelet reads its value from a Secret (never in the ConfigMap)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=HTTP_HEADER_NAME_PATTERN)]
    secret_key_ref: SecretKeySelector = Field(
        description="The value, written as in OTEL_EXPORTER_OTLP_HEADERS: percent-encoded (%2C for a comma)"
    )


class OtlpTLSSecret(CamelModel):
    """A Secret in the fleet's namespace, mounted read-only into the agents' pods."""

    name: DnsName = Field(description="Holds ca.crt, the CA that verifies the receiver's certificate")
    client_certificate: bool = Field(
        False, description="It also holds tls.crt and tls.key, which the agents present (mutual TLS)"
    )


class OtlpPush(CamelModel):
    """The agents push each cycle as OTLP metrics over HTTP, beside being scraped."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(  # header names are case-insensitive: the receiver would see one header twice
                "!has(self.headers) || self.headers.all(h, "
                "self.headers.filter(o, o.name.lowerAscii() == h.name.lowerAscii()).size() == 1)",
                "otlp.headers names a header twice (names are case-insensitive)",
                ".headers",
            )
        )
    )

    endpoint: OtlpEndpoint = Field(
        max_length=2048,
        description="OTLP/HTTP receiver, e.g. http://otel-collector.monitoring:4318; /v1/metrics is appended "
        "unless the path ends in it",
        json_schema_extra=validations(cel(f"self.matches('{_OTLP_ENDPOINT_SHAPE}')", _OTLP_ENDPOINT_MESSAGE)),
    )
    interval_seconds: float = Field(
        60.0, ge=MIN_SCRAPE_INTERVAL_SECONDS, le=3600, description="Push at most this often, a cycle's values"
    )
    timeout_seconds: float = Field(10.0, gt=0, le=300, description="Timeout of one push request")
    headers: list[OtlpHeader] = Field(
        default=[],
        max_length=MAX_OTLP_HEADERS,
        description="Sent with every push, e.g. Authorization; values from Secrets, as env of the agents' pods",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    tls_secret: OtlpTLSSecret | None = Field(
        None, description="CA (and client certificate); unset: system CAs"
    )
    insecure_skip_verify: bool = Field(False, description="Accept any receiver certificate (testing only)")

    @model_validator(mode="after")
    def _distinct_header_names(self) -> OtlpPush:
        names = [header.name.lower() for header in self.headers]
        if len(set(names)) != len(names):
            raise ValueError("otlp.headers names a header twice (names are case-insensitive)")
        return self


class FleetSpec(CamelModel):
    """What an EsnodeFleet asks for. An empty spec is valid: agents on every node, defaults throughout."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.agent) || !has(self.agent.collectorTimeoutSeconds)"
                " || self.agent.collectorTimeoutSeconds <= self.scrapeIntervalSeconds",
                "agent.collectorTimeoutSeconds must not exceed scrapeIntervalSeconds",
                ".agent.collectorTimeoutSeconds",
            ),
            cel(
                "!has(self.serviceMonitor) || !has(self.serviceMonitor.authorization)"
                " || (has(self.metricsAuth) && self.metricsAuth == 'kubernetes')",
                "serviceMonitor.authorization needs metricsAuth kubernetes: the agents check no token otherwise",
                ".serviceMonitor.authorization",
            ),
        )
    )

    image: Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^\S+$")] | None = Field(
        None, description="Agent image; unset: the image released with this operator"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[LocalObjectReference] = Field(default=[], max_length=16)
    node_selector: dict[LabelKey, LabelValue] = Field(
        default={}, max_length=MAX_LABELS, description="Nodes that run an agent; empty: all nodes"
    )
    tolerations: list[Toleration] = Field(
        default=[Toleration(operator="Exists")],
        max_length=64,
        description="Default: tolerate every taint, so tainted GPU nodes get an agent too",
    )
    affinity: FreeForm | None = Field(None, description="Pod affinity, as in a pod spec")
    resources: Resources = Field(default=Resources())
    priority_class_name: DnsName | None = None
    runtime_class_name: DnsName | None = Field(
        None,
        description="RuntimeClass giving the agent NVML, e.g. nvidia where the NVIDIA runtime is not default",
    )
    port: int = Field(
        9100,
        ge=1,
        le=65535,
        description="Metrics port: the pod's, or the node's when hostNetwork (pick one node-exporter does not hold)",
    )
    host_network: bool = Field(
        False,
        description="Run in the node's network namespace. Not needed for network metrics: the agent reads the "
        "node's interfaces through the host's PID 1",
    )
    scrape_interval_seconds: float = Field(
        5.0, ge=MIN_SCRAPE_INTERVAL_SECONDS, le=3600, description="Agent collection period"
    )
    collectors: Collectors = Field(default=Collectors())
    gpu: GpuOptions = Field(default=GpuOptions())
    power_envelope: PowerEnvelope = Field(default=PowerEnvelope())
    power_budget: PowerBudget = Field(default=PowerBudget())  # fleet power budget (issue 16)
    power_capping: PowerCapping = Field(default=PowerCapping())  # the agents' capping (issue 16)
    service_monitor: ServiceMonitorSpec = Field(default=ServiceMonitorSpec())
    report: ReportSettings = Field(default=ReportSettings())
    node_condition: bool = Field(
        False,
        description="Agents also set the Node condition EsnodePowerEnvelopeExceeded on their own node "
        "(grants them patch on nodes/status)",
    )
    agent: AgentSettings = Field(default=AgentSettings())
    env: list[EnvVar] = Field(
        default=[],
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    metrics_auth: Literal["none", "kubernetes"] = Field(
        "none",
        description="kubernetes: every agent endpoint but the probes needs a bearer token allowed get on its "
        "path (TokenReview and SubjectAccessReview, as kube-rbac-proxy); give Prometheus the ClusterRole "
        "esnode-metrics-reader",
    )
    metrics_tls: MetricsTLS | None = Field(
        None,
        alias="metricsTLS",  # to_camel would say metricsTls
        description="Serve the agents' endpoints over HTTPS; unset: plain HTTP",
    )
    otlp: OtlpPush | None = Field(
        None, description="Push the agents' metrics to an OTLP receiver; unset: off"
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> FleetSpec:
        timeout = self.agent.collector_timeout_seconds
        if timeout is not None and timeout > self.scrape_interval_seconds:
            raise ValueError("agent.collectorTimeoutSeconds must not exceed scrapeIntervalSeconds")
        return self

    @model_validator(mode="after")
    def _unique_env_names(self) -> FleetSpec:
        names = [env.name for env in self.env]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"env names must be unique: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _authorization_needs_metrics_auth(self) -> FleetSpec:
        if self.service_monitor.authorization is not None and self.metrics_auth != "kubernetes":
            raise ValueError(
                "serviceMonitor.authorization needs metricsAuth kubernetes: the agents check no token otherwise"
            )
        return self

    @property
    def effective_image(self) -> str:
        return self.image or default_image()


def default_image() -> str:
    tag = __version__.replace("+", "-")  # a local version's "+" is not allowed in an image tag
    return f"{DEFAULT_IMAGE_REPOSITORY}:{tag}"


# ----------------------------------------------------------------------------------------- status

ConditionStatus = Literal["True", "False", "Unknown"]
FleetState = Literal["Ready", "Progressing", "Degraded"]


class Condition(CamelModel):
    """metav1.Condition."""

    type: Annotated[str, StringConstraints(max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    message: Annotated[str, StringConstraints(max_length=32768)]
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(None, ge=0)


class DaemonSetCounts(CamelModel):
    """The fleet's DaemonSets' counters, summed over its envelope groups."""

    desired: int = Field(0, ge=0, description="Nodes that should run an agent")
    current: int = Field(0, ge=0, description="Nodes running an agent pod")
    ready: int = Field(0, ge=0)
    updated: int = Field(0, ge=0, description="Agents running the current pod template")
    available: int = Field(0, ge=0)
    unavailable: int = Field(0, ge=0)


MAX_NAMED_NODES = 10
NodeName = Annotated[str, StringConstraints(max_length=253)]


class PowerSummary(CamelModel):
    """Fleet-wide power picture from the agents' EsnodeNode reports; only fresh reports count."""

    nodes_reporting: int = Field(
        0, ge=0, description="Nodes whose last report is fresh (within 3 heartbeats)"
    )
    nodes_stale: int = Field(0, ge=0, description="Nodes whose last report is older than 3 heartbeats")
    stale_nodes: list[NodeName] = Field(
        default=[], max_length=MAX_NAMED_NODES, description=f"The first {MAX_NAMED_NODES} stale nodes"
    )
    nodes_over_envelope: int = Field(0, ge=0, description="Reporting nodes drawing more than their envelope")
    over_envelope_nodes: list[NodeName] = Field(
        default=[], max_length=MAX_NAMED_NODES, description=f"The first {MAX_NAMED_NODES} of those"
    )
    total_power_watts: float | None = Field(
        None, ge=0, description="Node power summed over reporting nodes that measure it"
    )
    total_gpus: int = Field(0, ge=0, description="GPUs on reporting nodes")
    total_gpu_power_watts: float | None = Field(
        None, ge=0, description="GPU power summed over reporting nodes"
    )
    # Fleet power budget (issue 16); unset while spec.powerBudget.totalWatts is.
    budget_watts: float | None = Field(None, ge=0, description="spec.powerBudget.totalWatts")
    allocated_watts: float | None = Field(
        None, ge=0, description="Envelopes held by the fleet's nodes, summed"
    )
    headroom_watts: float | None = Field(None, description="Budget less the power drawn (totalPowerWatts)")
    nodes_capped: int | None = Field(
        None, ge=0, description="Reporting nodes whose GPUs esnode holds under their limit"
    )


class FleetStatus(CamelModel):
    observed_generation: int | None = Field(None, ge=0)
    state: FleetState | None = None
    ready_text: str | None = Field(None, description="Ready agents / desired agents, e.g. 3/3")
    conditions: list[Condition] = Field(
        default=[],
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    daemon_set: DaemonSetCounts | None = None
    power: PowerSummary | None = None


# ------------------------------------------------------------------------------------ EsnodeNode


class NodeReportSpec(CamelModel):
    """An EsnodeNode's spec: whose report it is. Its status is the agent's NodeReport (esnode_agent.report.model)."""

    node_name: NodeName = Field(min_length=1, description="The Node this report describes")
    fleet: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="The EsnodeFleet whose agent writes it"
    )
    envelope_watts: Watts | None = Field(
        None,
        description="Envelope from the fleet's power budget (written by the operator); a static one wins",
    )
