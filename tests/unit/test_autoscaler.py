"""The autoscaler policy on a fake clock: a pure function of (stats, policy, now)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from gpuform.gateway.autoscaler import (
    ScalingPolicy,
    Stats,
    Window,
    WorkerView,
    desired_workers,
    policy_of,
    schedule_min,
)
from gpuform.gateway.states import WorkerState
from gpuform.spec import EndpointSpec

IDLE, INITIALIZING, RUNNING, STOPPING = (WorkerState.IDLE, WorkerState.INITIALIZING, WorkerState.RUNNING,
                                         WorkerState.STOPPING)

pytestmark = pytest.mark.unit


def make_policy(**overrides: Any) -> ScalingPolicy:
    """An endpoint's policy with the configuration's defaults (RunPod's), then ``overrides``."""
    return replace(policy_of(EndpointSpec(pool="p", gateway="g")), **overrides)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()  # a Monday, 12:00 UTC


def idle(i: int, since: float) -> WorkerView:
    return WorkerView(f"w{i}", IDLE, idle_since=since)


def test_first_job_scales_from_zero() -> None:
    d = desired_workers(Stats(queued=1, running_jobs=0, oldest_wait=0.0), make_policy(), NOW)
    assert (d.desired, d.start, d.stop) == (1, 1, ())


def test_nothing_queued_nothing_started_and_min_workers_always_up() -> None:
    assert desired_workers(Stats(0, 0, 0.0), make_policy(), NOW).start == 0
    d = desired_workers(Stats(0, 0, 0.0), make_policy(min_workers=2), NOW)
    assert (d.desired, d.start) == (2, 2)


def test_queue_delay_adds_a_worker_only_after_the_delay() -> None:
    busy = (WorkerView("w1", RUNNING),)
    policy = make_policy(scaler="queue_delay", scaler_value=4)
    assert desired_workers(Stats(3, 1, oldest_wait=3.9, workers=busy), policy, NOW).start == 0
    assert desired_workers(Stats(3, 1, oldest_wait=4.1, workers=busy), policy, NOW).start == 1
    starting = (*busy, WorkerView("w2", INITIALIZING))
    assert desired_workers(Stats(1, 1, oldest_wait=10, workers=starting), policy, NOW).start == 0


def test_request_count_targets_jobs_per_worker() -> None:
    policy = make_policy(scaler="request_count", scaler_value=2, max_workers=10)
    d = desired_workers(Stats(queued=5, running_jobs=2, oldest_wait=0.1), policy, NOW)
    assert (d.desired, d.start) == (4, 4)


def test_max_workers_caps_everything() -> None:
    policy = make_policy(scaler="request_count", scaler_value=1, max_workers=3, min_workers=1)
    assert desired_workers(Stats(queued=50, running_jobs=0, oldest_wait=100), policy, NOW).desired == 3


def test_idle_workers_stop_only_after_the_idle_timeout_and_not_below_min() -> None:
    policy = make_policy(idle_timeout=5, min_workers=1)
    workers = (idle(1, NOW - 10), idle(2, NOW - 6), idle(3, NOW - 1))
    d = desired_workers(Stats(0, 0, 0, workers=workers), policy, NOW)
    assert d.stop == ("w1", "w2")  # w3 idled only 1 s; one worker stays for min_workers
    d = desired_workers(Stats(0, 0, 0, workers=workers), make_policy(idle_timeout=5), NOW)
    assert d.stop == ("w1", "w2")
    d = desired_workers(Stats(0, 0, 0, workers=workers), make_policy(idle_timeout=5), NOW + 10)
    assert d.stop == ("w1", "w2", "w3")


def test_request_count_also_waits_for_the_idle_timeout() -> None:
    policy = make_policy(scaler="request_count", scaler_value=1, idle_timeout=30)
    assert desired_workers(Stats(0, 0, 0, workers=(idle(1, NOW - 5),)), policy, NOW).stop == ()


def test_stopping_and_busy_workers_are_never_stopped_again() -> None:
    workers = (WorkerView("a", RUNNING), WorkerView("b", STOPPING), idle(3, NOW - 100))
    d = desired_workers(Stats(0, 1, 0, workers=workers), make_policy(idle_timeout=5), NOW)
    assert d.stop == ("w3",)


def test_warm_schedule_raises_the_floor_inside_its_window() -> None:
    office = make_policy(schedule=(Window("0 8 * * 1-5", 10 * 3600, 3),), max_workers=5)
    assert schedule_min(office, NOW) == 3
    assert desired_workers(Stats(0, 0, 0), office, NOW).start == 3
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
    assert schedule_min(office, saturday) == 0
    evening = datetime(2026, 11, 23, 18, 30, tzinfo=UTC).timestamp()
    assert schedule_min(office, evening) == 0
    berlin = make_policy(schedule=(Window("0 8 * * *", 3600, 1),), timezone="Europe/Berlin")
    assert schedule_min(berlin, datetime(2026, 11, 23, 7, 30, tzinfo=UTC).timestamp()) == 1  # 08:30 in Berlin


def test_spending_cap_blocks_scale_up_above_min_and_says_so() -> None:
    policy = make_policy(min_workers=1, max_workers=5, spend_limit_per_day=1.0, scaler="request_count",
                           scaler_value=1)
    d = desired_workers(Stats(queued=4, running_jobs=0, oldest_wait=9, spent_today=1.5), policy, NOW)
    assert (d.start, d.blocked) == (1, "SPEND_CAP") and "spending cap reached" in d.reasons[0]
    d = desired_workers(Stats(queued=4, running_jobs=0, oldest_wait=9, spent_today=0.5), policy, NOW)
    assert (d.start, d.blocked) == (4, "")


def test_crash_loop_backoff_holds_starts_and_names_the_reason() -> None:
    stats = Stats(queued=2, running_jobs=0, oldest_wait=5, backoff_until=NOW + 30, backoff_reason="exited with code 1")
    d = desired_workers(stats, make_policy(), NOW)
    assert (d.start, d.blocked) == (0, "UNHEALTHY") and "exited with code 1" in d.reasons[0]
    assert desired_workers(stats, make_policy(), NOW + 31).start == 1
