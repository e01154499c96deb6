"""The autoscaler: a pure function of (endpoint stats, policy, now). No I/O, no clock of its own.

desired = clamp(max(min_workers, schedule_min, target), 0, max_workers), where

- ``queue_delay``: target = live workers, plus one when jobs are queued and no worker is live, or when the
  oldest queued job has waited longer than ``scaler_value`` seconds (and fewer workers are starting than
  jobs are queued);
- ``request_count``: target = ceil((queued + running) / scaler_value).

A worker stops only after ``idle_timeout`` without a job, under both scalers, and never below the floor
(min_workers and the warm schedule). Above the floor, scale-up is blocked by the daily spending cap, by a
crash-loop back-off, and by missing capacity; the decision says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gpuform.util.cron import window_active

INITIALIZING, IDLE, RUNNING, STOPPING, UNHEALTHY = "initializing", "idle", "running", "stopping", "unhealthy"
SLEEPING = "sleeping"  # vLLM sleep mode: the process lives, the GPU memory is freed; woken on demand
LIVE = frozenset({INITIALIZING, IDLE, RUNNING})


@dataclass(frozen=True)
class WorkerView:
    id: str
    state: str
    idle_since: float | None = None  # when it last became idle (None while busy or starting)
    stale: bool = False  # runs an older revision of the endpoint


@dataclass(frozen=True)
class Window:
    cron: str
    duration: float
    min_workers: int


@dataclass(frozen=True)
class ScalingPolicy:
    min_workers: int = 0
    max_workers: int = 3
    idle_timeout: float = 5.0
    scaler: str = "queue_delay"
    scaler_value: float = 4.0
    schedule: tuple[Window, ...] = ()
    timezone: str = "UTC"
    spend_limit_per_day: float | None = None


@dataclass(frozen=True)
class Stats:
    queued: int  # jobs that may trigger scale-up (low-priority ones excluded)
    running_jobs: int
    oldest_wait: float
    workers: tuple[WorkerView, ...] = ()
    spent_today: float = 0.0
    backoff_until: float = 0.0
    backoff_reason: str = ""


@dataclass(frozen=True)
class Decision:
    desired: int
    start: int
    stop: tuple[str, ...]
    blocked: str = ""  # why fewer workers start than wanted: SPEND_CAP, UNHEALTHY
    reasons: tuple[str, ...] = field(default_factory=tuple)


def schedule_min(policy: ScalingPolicy, now: float) -> int:
    """Warm workers the schedule asks for at ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    return max((w.min_workers for w in policy.schedule if window_active(w.cron, w.duration, moment, policy.timezone)),
               default=0)


def desired_workers(stats: Stats, policy: ScalingPolicy, now: float) -> Decision:
    live = [w for w in stats.workers if w.state in LIVE]
    starting = sum(1 for w in live if w.state == INITIALIZING)
    floor = min(max(policy.min_workers, schedule_min(policy, now)), policy.max_workers)
    if policy.scaler == "request_count":
        target = math.ceil((stats.queued + stats.running_jobs) / policy.scaler_value)
    else:
        target = len(live)
        if (stats.queued and not live) or (stats.oldest_wait > policy.scaler_value and starting < stats.queued):
            target += 1
    desired = max(0, min(max(floor, target), policy.max_workers))
    reasons: list[str] = []
    blocked = ""
    if desired > floor and policy.spend_limit_per_day is not None and stats.spent_today >= policy.spend_limit_per_day:
        reasons.append(f"spending cap reached ({stats.spent_today:.4f} of {policy.spend_limit_per_day:g} today): "
                       f"no scale-up beyond min_workers")
        desired, blocked = max(floor, min(desired, len(live))), "SPEND_CAP"
    start = max(0, desired - len(live))
    if start and now < stats.backoff_until:
        reasons.append(f"start back-off after failures ({stats.backoff_reason}); next try in "
                       f"{stats.backoff_until - now:.0f}s")
        start, blocked = 0, "UNHEALTHY"
    if policy.scaler == "request_count":
        needed = target
    else:  # busy workers, plus idle ones that queued jobs are about to use
        idle = sum(1 for w in live if w.state == IDLE)
        needed = len(live) - idle + min(stats.queued, idle)
    keep = min(max(floor, needed), policy.max_workers)
    return Decision(desired, start, _to_stop(live, policy, now, keep), blocked, tuple(reasons))


def _to_stop(live: list[WorkerView], policy: ScalingPolicy, now: float, keep: int) -> tuple[str, ...]:
    """Idle workers past their idle timeout, oldest idle first, down to ``keep`` live workers."""
    surplus = len(live) - keep
    if surplus <= 0:
        return ()
    idle = sorted((w for w in live if w.state == IDLE and w.idle_since is not None
                   and now - w.idle_since >= policy.idle_timeout), key=lambda w: (w.idle_since or 0.0))
    return tuple(w.id for w in idle[:surplus])
