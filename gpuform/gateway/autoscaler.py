"""The autoscaler: a pure function of (endpoint stats, policy, now). No I/O, no clock of its own.

desired = clamp(max(min_workers, schedule_min, target), 0, max_workers), where

- ``queue_delay``: target = live workers, plus one when jobs are queued and no worker is live, or when the
  oldest queued job has waited longer than ``scaler_value`` seconds (and fewer workers are starting than
  jobs are queued);
- ``request_count``: target = ceil((queued + running) / scaler_value);
- ``rate_forecast``: target = ceil(max(queued + running, L) / scaler_value), where L is the load (jobs queued
  or running) expected one cold start from now: the trend of the last load windows, or their peak when higher
  (:mod:`gpuform.gateway.demand`).

With ``keep_alive: learned`` the target is also at least the learned window's one worker: kept after the
endpoint goes idle until the high percentile of its past idle gaps (plus a margin), or started a cold start
ahead of their low percentile; with fewer than ``min_samples`` gaps it asks for none. The caller folds each
observation into the endpoint's remembered :class:`~gpuform.gateway.demand.Demand` with :func:`remember`.

A worker stops only after ``idle_timeout`` without a job, under every scaler, and never below the floor
(min_workers and the warm schedule) or what the scaler still needs. Above the floor, scale-up is blocked by
the daily spending cap, by a crash-loop back-off, and by missing capacity; the decision says which.

The decision also says what happens to each worker (the reconciler only carries it out):

- workers to start are first found among sleeping ones (vLLM sleep mode: a wake takes about a second,
  a cold start far longer); a sleeping worker of an older revision, or asleep past ``sleep_timeout``, stops;
- an idle worker past its idle timeout is put to sleep when the endpoint uses sleep mode, else stopped;
- an idle worker of an older revision is replaced at once (busy ones after their job: rolling release).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gpuform.gateway.demand import Demand, Forecast, Learned, forecast_load, learned_floor, observe_gaps, observe_load
from gpuform.gateway.states import LIVE, WorkerState
from gpuform.spec import EndpointSpec
from gpuform.util.cron import window_active

IDLE_TIMEOUT = "idle timeout"
REPLACED = "replaced by a new endpoint revision"
ASLEEP_TOO_LONG = "asleep past sleep_timeout"
ASLEEP_STALE = "asleep and replaced by a new endpoint revision"


@dataclass(frozen=True)
class WorkerView:
    id: str
    state: WorkerState
    idle_since: float | None = None  # when it last became idle (None while busy or starting)
    stale: bool = False  # runs an older revision of the endpoint
    asleep_since: float | None = None


@dataclass(frozen=True)
class Window:
    cron: str
    duration: float
    min_workers: int


@dataclass(frozen=True)
class ScalingPolicy:
    min_workers: int
    max_workers: int
    idle_timeout: float
    scaler: str
    scaler_value: float
    schedule: tuple[Window, ...] = ()
    timezone: str = "UTC"
    spend_limit_per_day: float | None = None
    sleep_mode: bool = False
    sleep_timeout: float = 3600.0
    keep_alive: str = "fixed"  # or "learned"
    learned: Learned = field(default_factory=Learned)
    forecast: Forecast = field(default_factory=Forecast)
    cold_start: float = 30.0  # expected: what pre-warming and rate_forecast look ahead by


@dataclass(frozen=True)
class Stats:
    queued: int  # jobs that may trigger scale-up (low-priority ones excluded)
    running_jobs: int
    oldest_wait: float
    workers: tuple[WorkerView, ...] = ()
    spent_today: float = 0.0
    backoff_until: float = 0.0
    backoff_reason: str = ""
    woke_at: float = 0.0  # when a job last arrived at the endpoint while it had none queued or running
    demand: Demand = field(default_factory=Demand)  # what the endpoint's caller remembers (see :func:`remember`)


@dataclass(frozen=True)
class Decision:
    desired: int
    start: int  # cold starts (after wakes are counted)
    stop: tuple[str, ...]  # idle past their timeout (the count the scaler asked for)
    blocked: str = ""  # why fewer workers start than wanted: SPEND_CAP, UNHEALTHY
    reasons: tuple[str, ...] = field(default_factory=tuple)
    wake: tuple[str, ...] = ()
    sleep: tuple[str, ...] = ()
    retire: tuple[tuple[str, str], ...] = ()  # (worker id, reason): every worker that stops, and why


def schedule_min(policy: ScalingPolicy, now: float) -> int:
    """Warm workers the schedule asks for at ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    return max((w.min_workers for w in policy.schedule if window_active(w.cron, w.duration, moment, policy.timezone)),
               default=0)


def remember(demand: Demand, stats: Stats, policy: ScalingPolicy, now: float) -> Demand:
    """``demand`` with the observation ``stats`` at ``now`` folded in (only what ``policy`` uses). The caller
    keeps the result per endpoint and passes it back in ``Stats.demand``."""
    load = stats.queued + stats.running_jobs
    gaps, window = demand.gaps, demand.load
    if policy.keep_alive == "learned":
        gaps = observe_gaps(gaps, now, load > 0, stats.woke_at, policy.learned)
    if policy.scaler == "rate_forecast":
        window = observe_load(window, now, load, policy.forecast)
    return demand if gaps is demand.gaps and window is demand.load else Demand(gaps, window)


def _learned(stats: Stats, policy: ScalingPolicy, now: float) -> int:
    if policy.keep_alive != "learned":
        return 0
    return min(learned_floor(stats.demand.gaps, policy.learned, policy.idle_timeout, policy.cold_start, now),
               policy.max_workers)


def _target(stats: Stats, policy: ScalingPolicy, live: list[WorkerView]) -> int:
    load = stats.queued + stats.running_jobs
    if policy.scaler == "request_count":
        return math.ceil(load / policy.scaler_value)
    if policy.scaler == "rate_forecast":
        ahead = forecast_load(stats.demand.load, policy.forecast, policy.cold_start)
        return math.ceil(max(load, ahead) / policy.scaler_value)
    starting = sum(1 for w in live if w.state == WorkerState.INITIALIZING)
    target = len(live)
    if (stats.queued and not live) or (stats.oldest_wait > policy.scaler_value and starting < stats.queued):
        target += 1
    return target


def desired_workers(stats: Stats, policy: ScalingPolicy, now: float) -> Decision:
    live = [w for w in stats.workers if w.state in LIVE]
    floor = min(max(policy.min_workers, schedule_min(policy, now)), policy.max_workers)
    learned = _learned(stats, policy, now)  # counted like busy workers: kept past idle_timeout, started ahead
    target = max(_target(stats, policy, live), learned)
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
    if policy.scaler in ("request_count", "rate_forecast"):
        needed = target
    else:  # busy workers, plus idle ones that queued jobs are about to use
        idle = sum(1 for w in live if w.state == WorkerState.IDLE)
        needed = max(len(live) - idle + min(stats.queued, idle), learned)
    keep = min(max(floor, needed), policy.max_workers)
    stop = _to_stop(live, policy, now, keep)
    return _per_worker(Decision(desired, start, stop, blocked, tuple(reasons)), stats.workers, policy, now)


def _to_stop(live: list[WorkerView], policy: ScalingPolicy, now: float, keep: int) -> tuple[str, ...]:
    """Idle workers past their idle timeout, oldest idle first, down to ``keep`` live workers."""
    surplus = len(live) - keep
    if surplus <= 0:
        return ()
    idle = sorted((w for w in live if w.state == WorkerState.IDLE and w.idle_since is not None
                   and now - w.idle_since >= policy.idle_timeout), key=lambda w: (w.idle_since or 0.0))
    return tuple(w.id for w in idle[:surplus])


def _per_worker(decision: Decision, workers: tuple[WorkerView, ...], policy: ScalingPolicy, now: float) -> Decision:
    """Turn counts into what happens to each worker: wakes, sleeps and stops with their reasons."""
    starts, wake, sleep = decision.start, [], []
    retire: list[tuple[str, str]] = []
    for w in workers:
        if w.state != WorkerState.SLEEPING:
            continue
        if starts > 0 and not w.stale:
            wake.append(w.id)
            starts -= 1
        elif w.stale:
            retire.append((w.id, ASLEEP_STALE))
        elif now - (w.asleep_since if w.asleep_since is not None else now) > policy.sleep_timeout:
            retire.append((w.id, ASLEEP_TOO_LONG))
    stopping = set(decision.stop)
    for w in workers:
        if w.id in stopping and policy.sleep_mode and not w.stale:
            sleep.append(w.id)
        elif w.id in stopping:
            retire.append((w.id, IDLE_TIMEOUT))
        elif w.stale and w.state == WorkerState.IDLE:
            retire.append((w.id, REPLACED))
    return Decision(decision.desired, starts, decision.stop, decision.blocked, decision.reasons,
                    tuple(wake), tuple(sleep), tuple(retire))


def policy_of(spec: EndpointSpec) -> ScalingPolicy:
    """The scaling policy of an endpoint spec (its defaults come from the configuration schema)."""
    scaling, schedule, learned = spec.scaling, spec.schedule, spec.scaling.learned
    windows = tuple(Window(w.cron, w.duration, w.min_workers) for w in schedule.schedule) if schedule else ()
    return ScalingPolicy(min_workers=scaling.min_workers, max_workers=scaling.max_workers,
                         idle_timeout=scaling.idle_timeout, scaler=scaling.scaler, scaler_value=scaling.scaler_value,
                         schedule=windows, timezone=schedule.timezone if schedule else "UTC",
                         spend_limit_per_day=spec.spend_limit_per_day, sleep_mode=spec.worker.sleep_mode,
                         sleep_timeout=spec.worker.sleep_timeout, keep_alive=scaling.keep_alive,
                         learned=Learned(learned.bin, learned.history, learned.low_percentile,
                                         learned.high_percentile, learned.margin, learned.min_samples),
                         forecast=Forecast(scaling.forecast.window, scaling.forecast.windows),
                         cold_start=scaling.cold_start)
