"""Log records of one kind are rate-limited, and what was left out is counted in the log."""

from __future__ import annotations

import logging

import pytest

from esnode_agent.log_rate_limit import MAX_GROUPS, RateLimitFilter
from esnode_agent.logging_setup import TextFormatter


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(TextFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def limited() -> tuple[logging.Logger, _Lines, _Clock]:
    clock, handler = _Clock(), _Lines()
    handler.addFilter(RateLimitFilter(handler.handle, burst=3, interval_seconds=60, clock=clock))
    logger = logging.getLogger("test.rate_limit")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler, clock


def test_past_the_burst_one_line_says_so_and_the_rest_are_counted_later(
    limited: tuple[logging.Logger, _Lines, _Clock],
) -> None:
    logger, handler, clock = limited
    for port in range(1000):
        logger.warning("bad request", extra={"client": f"127.0.0.1:{port}"})  # fields differ: one group
    assert len(handler.lines) == 4
    assert "client=127.0.0.1:2" in handler.lines[2]
    assert 'msg="suppressing similar records" similar_to="bad request"' in handler.lines[3]
    clock.now += 61
    logger.warning("bad request", extra={"client": "127.0.0.1:1"})
    assert (
        'msg="suppressed 997 similar" similar_to="bad request" interval_seconds=60 suppressed=997'
        in (handler.lines[4])
    )
    assert "level=warning" in handler.lines[4]
    assert "client=127.0.0.1:1" in handler.lines[5]
    assert len(handler.lines) == 6


def test_groups_are_per_message_and_level(limited: tuple[logging.Logger, _Lines, _Clock]) -> None:
    logger, handler, _ = limited
    for _ in range(10):
        logger.warning("one kind")
        logger.warning("another kind")
        logger.error("one kind")
    assert len(handler.lines) == 3 * 4


def test_new_kinds_past_the_group_cap_share_one_group(limited: tuple[logging.Logger, _Lines, _Clock]) -> None:
    logger, handler, _ = limited
    for index in range(MAX_GROUPS + 1000):
        logger.warning(f"kind {index}")  # a message built per record: each its own template
    assert len(handler.lines) <= MAX_GROUPS + 4
