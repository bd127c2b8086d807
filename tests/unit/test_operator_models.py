"""EsnodeFleet spec models: defaults of an empty spec, camelCase on the wire, the rejection corpus."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from esnode_operator.api.models import FleetSpec, FleetStatus, duration_seconds


def test_an_empty_spec_is_valid_and_means_every_default() -> None:
    spec = FleetSpec.model_validate({})
    assert spec.port == 9100
    assert spec.host_network is False
    assert spec.scrape_interval_seconds == 5.0
    assert spec.node_selector == {}
    assert [t.model_dump(exclude_none=True) for t in spec.tolerations] == [{"operator": "Exists"}]
    assert spec.service_monitor.enabled is True
    assert spec.power_envelope.default_watts is None
    assert spec.gpu.visible_devices == "all"
    assert spec.effective_image.startswith("ghcr.io/esnode/esnode-agent:")
    assert "+" not in spec.effective_image.rsplit(":", 1)[1]


def test_the_wire_format_is_camel_case() -> None:
    spec = FleetSpec.model_validate(
        {
            "imagePullPolicy": "Always",
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "scrapeIntervalSeconds": 2.5,
            "gpu": {"k8sMode": True, "podResourcesSocket": "/run/pr/kubelet.sock"},
            "powerEnvelope": {
                "defaultWatts": 1200,
                "overrides": [{"nodeSelector": {"matchLabels": {"a": "b"}}, "watts": 700}],
            },
            "serviceMonitor": {"scrapeTimeout": "4s", "interval": "10s"},
        }
    )
    assert spec.gpu.k8s_mode is True
    assert spec.power_envelope.overrides[0].node_selector.match_labels == {"a": "b"}
    wire = spec.model_dump(mode="json")
    assert wire["gpu"]["k8sMode"] is True
    assert wire["powerEnvelope"]["defaultWatts"] == 1200
    assert "imagePullPolicy" in wire and "image_pull_policy" not in wire


def _error_text(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        FleetSpec.model_validate(spec)
    return str(caught.value)


INVALID = {
    "negative watts": ({"powerEnvelope": {"defaultWatts": -5}}, "greater than 0"),
    "zero override watts": (
        {"powerEnvelope": {"overrides": [{"nodeSelector": {"matchLabels": {"a": "b"}}, "watts": 0}]}},
        "greater than 0",
    ),
    "unknown field": ({"bogus": 1}, "Extra inputs are not permitted"),
    "unknown nested field": ({"gpu": {"mig": True, "migg": True}}, "Extra inputs are not permitted"),
    "interval in words": ({"serviceMonitor": {"interval": "5 minutes"}}, "should match pattern"),
    "zero interval": ({"serviceMonitor": {"interval": "0s"}}, "interval must be longer than 0s"),
    "timeout above interval": (
        {"serviceMonitor": {"interval": "10s", "scrapeTimeout": "1m"}},
        "must not exceed",
    ),
    "label value with spaces": ({"nodeSelector": {"gpu": "not valid"}}, "should match pattern"),
    "label key with spaces": ({"nodeSelector": {"bad key": "x"}}, "should match pattern"),
    "override selecting everything": (
        {"powerEnvelope": {"overrides": [{"nodeSelector": {}, "watts": 100}]}},
        "must name at least one label",
    ),
    "In without values": (
        {
            "powerEnvelope": {
                "overrides": [
                    {"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}, "watts": 1}
                ]
            }
        },
        "In and NotIn need values",
    ),
    "Exists with values": (
        {
            "powerEnvelope": {
                "overrides": [
                    {
                        "nodeSelector": {
                            "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                        },
                        "watts": 1,
                    }
                ]
            }
        },
        "take none",
    ),
    "port out of range": ({"port": 70000}, "less than or equal to 65535"),
    "interval of zero seconds": ({"scrapeIntervalSeconds": 0}, "greater than or equal to 0.1"),
    "collector timeout above interval": (
        {"scrapeIntervalSeconds": 2, "agent": {"collectorTimeoutSeconds": 3}},
        "must not exceed scrapeIntervalSeconds",
    ),
    "duplicate env": (
        {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "env names must be unique",
    ),
    "env value and valueFrom": (
        {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]},
        "not both",
    ),
    "Equal toleration without key": ({"tolerations": [{"operator": "Equal", "value": "x"}]}, "needs a key"),
    "quantity in words": ({"resources": {"limits": {"memory": "lots"}}}, "should match pattern"),
    "pull policy typo": ({"imagePullPolicy": "Sometimes"}, "Always"),
    "gpu list with spaces": ({"gpu": {"visibleDevices": "0, 1"}}, "should match pattern"),
    "relative socket path": ({"gpu": {"podResourcesSocket": "kubelet.sock"}}, "should match pattern"),
}


@pytest.mark.parametrize(("spec", "expected"), INVALID.values(), ids=INVALID.keys())
def test_invalid_specs_are_refused_with_the_reason(spec: dict[str, Any], expected: str) -> None:
    assert expected in _error_text(spec)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1h1m1s1ms", 3661.001)],
)
def test_durations_read_in_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


def test_status_leaves_the_power_summary_optional() -> None:
    status = FleetStatus.model_validate({"readyText": "2/2", "power": {"nodesReporting": 2}})
    assert status.power is not None and status.power.total_power_watts is None
