"""The review-decision cache of metrics_auth = kubernetes: bounded, and keeps no token."""

from __future__ import annotations

from esnode_agent.serve.decision_cache import DecisionCache


def test_oldest_decision_is_dropped_beyond_the_bound() -> None:
    cache: DecisionCache[str] = DecisionCache(ttl_seconds=60, max_entries=3)
    keys = [cache.key(f"token-{i}", "/metrics") for i in range(4)]
    for key in keys[:3]:
        cache.put(key, "allowed")
    cache.put(keys[0], "forbidden")  # refreshed: now the newest
    cache.put(keys[3], "allowed")
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) == "forbidden"
    assert cache.get(keys[3]) == "allowed"


def test_decisions_are_per_path_and_keyed_without_the_token() -> None:
    cache: DecisionCache[str] = DecisionCache(ttl_seconds=60)
    metrics, status = cache.key("secret-token", "/metrics"), cache.key("secret-token", "/status")
    cache.put(metrics, "allowed")
    assert cache.get(status) is None
    assert "secret-token" not in repr(metrics)
