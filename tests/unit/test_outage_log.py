"""A failure repeating through an outage is logged once, then once per interval with the count held back."""

from __future__ import annotations

import logging

import pytest

from gpuform.gateway.outage import RepeatedFailure

pytestmark = pytest.mark.unit


def test_a_repeated_failure_is_logged_once_per_interval_with_the_count_held_back(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    failed = RepeatedFailure(logging.getLogger("t.outage"), logging.WARNING, every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t.outage"):
        for _ in range(500):  # a burst of refused requests within one second
            failed("store error on %s: %s", "/v2/ep/run", "connection refused")
            now[0] += 0.002
        now[0] = 111.0
        failed("store error on %s: %s", "/v2/ep/run", "connection refused")
    assert [r.getMessage() for r in caplog.records] == [
        "store error on /v2/ep/run: connection refused",
        "store error on /v2/ep/run: connection refused (and 499 more like it in the last 11 s)"]
    assert failed.held == 0
