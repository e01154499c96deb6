"""Figures of a simulated policy, sweeps over policies, and the cost/latency frontier.

Percentiles are nearest-rank (the smallest delay at or above p% of requests), so a test can state them
exactly. A request's delay is the time from its arrival to the start of its execution.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpuform.config.types import parse_duration
from gpuform.errors import GpuformError
from gpuform.gateway.autoscaler import ScalingPolicy
from gpuform.simulate.engine import Run, simulate
from gpuform.simulate.model import Settings
from gpuform.simulate.scenario import POLICY_FIELDS, check_policy


@dataclass(frozen=True)
class Slo:
    percentile: float
    seconds: float

    def __str__(self) -> str:
        return f"p{self.percentile:g} ≤ {self.seconds:g}s"


def parse_slo(text: str) -> Slo:
    """``p95=2s`` (also p50, p99, any p between 0 and 100); raises ValueError saying how to write it."""
    name, sep, value = text.partition("=")
    hint = f'"{text}" is not an SLO; write pNN=DURATION, e.g. p95=2s'
    if not sep or not name.strip().lower().startswith("p"):
        raise ValueError(hint)
    try:
        pct = float(name.strip()[1:])
        seconds = float(parse_duration(value))
    except ValueError:
        raise ValueError(hint) from None
    if not 0 < pct <= 100:
        raise ValueError(f'"{text}": the percentile must be between 0 and 100')
    return Slo(pct, seconds)


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values (0.0 for none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Outcome:
    """One policy's figures."""

    policy: ScalingPolicy
    requests: int
    worker_seconds: float
    cost: float | None
    cold_starts: int
    wakes: int
    peak_workers: int
    p50: float
    p95: float
    p99: float
    max_delay: float
    over_slo: int
    unserved: int
    slo_delay: float  # the delay at the SLO's percentile
    meets_slo: bool
    span: float
    replay_seconds: float

    def to_json(self) -> dict[str, Any]:
        p = self.policy
        return {"policy": {"min_workers": p.min_workers, "max_workers": p.max_workers, "idle_timeout": p.idle_timeout,
                           "scaler": p.scaler, "scaler_value": p.scaler_value, "keep_alive": p.keep_alive},
                "requests": self.requests, "worker_seconds": round(self.worker_seconds, 3),
                "cost": None if self.cost is None else round(self.cost, 6), "cold_starts": self.cold_starts,
                "wakes": self.wakes, "peak_workers": self.peak_workers,
                "delay": {"p50": _finite(self.p50), "p95": _finite(self.p95), "p99": _finite(self.p99),
                          "max": _finite(self.max_delay)},
                "over_slo": self.over_slo, "unserved": self.unserved, "meets_slo": self.meets_slo,
                "span_seconds": round(self.span, 3), "replay_seconds": round(self.replay_seconds, 3)}


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def outcome(run: Run, settings: Settings, slo: Slo, replay_seconds: float = 0.0) -> Outcome:
    delays = sorted(run.delays)
    price = settings.price_per_second
    at_slo = percentile(delays, slo.percentile)
    return Outcome(settings.policy, len(delays), run.worker_seconds,
                   None if price is None else run.worker_seconds * price, run.cold_starts, run.wakes,
                   run.peak_workers, percentile(delays, 50), percentile(delays, 95), percentile(delays, 99),
                   delays[-1] if delays else 0.0, sum(1 for d in delays if d > slo.seconds),
                   sum(1 for d in delays if math.isinf(d)), at_slo, at_slo <= slo.seconds, run.end - run.t0,
                   replay_seconds)


def evaluate(arrivals: list[float], service: list[float], settings: Settings, slo: Slo) -> tuple[Outcome, Run]:
    """Simulate one policy and measure it (the replay's wall time included)."""
    started = time.perf_counter()
    run = simulate(arrivals, service, settings)
    return outcome(run, settings, slo, time.perf_counter() - started), run


# ---- sweeps -------------------------------------------------------------------------------------------

_PARSE: dict[str, Callable[[str], Any]] = {
    "min_workers": int, "max_workers": int, "idle_timeout": lambda v: float(parse_duration(v)),
    "scaler": str, "scaler_value": float, "keep_alive": str,
}


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``idle_timeout=5s,30s`` → ("idle_timeout", [5.0, 30.0]); raises GpuformError saying how to write it."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in _PARSE or not values.strip():
        raise GpuformError(f'"{text}" is not a sweep axis', f"Write NAME=V1,V2,… with NAME one of "
                           f"{', '.join(POLICY_FIELDS)}, e.g. min_workers=0,1,2 idle_timeout=5s,30s,120s.")
    try:
        parsed = [_PARSE[name](v.strip()) for v in values.split(",")]
    except ValueError as exc:
        raise GpuformError(f'sweep axis "{text}": {exc}', "Give numbers (durations for idle_timeout).") from None
    return name, list(dict.fromkeys(parsed))


def default_axes(policy: ScalingPolicy, concurrency: int) -> dict[str, list[Any]]:
    """The grid swept when no axis is given: floors up to 2, idle timeouts from RunPod's 5 s to 10 minutes,
    and scaler values around the defaults (seconds for queue_delay, jobs per worker for request_count)."""
    values: list[float] = [1.0, 2.0, 4.0, 8.0] if policy.scaler == "queue_delay" else \
        sorted({float(max(1, concurrency // 2)), float(concurrency), float(2 * concurrency)})
    return {"min_workers": [n for n in (0, 1, 2) if n <= policy.max_workers],
            "idle_timeout": [5.0, 30.0, 120.0, 600.0], "scaler_value": values}


def policies(base: ScalingPolicy, axes: dict[str, list[Any]]) -> list[ScalingPolicy]:
    """Every combination of the axes applied to ``base`` (combinations that cannot run are left out)."""
    names = list(axes)
    out: list[ScalingPolicy] = []
    for combo in itertools.product(*(axes[n] for n in names)):
        policy = replace(base, **dict(zip(names, combo, strict=True)))
        try:
            check_policy(policy)
        except GpuformError:
            continue
        out.append(policy)
    return out


def spend(o: Outcome) -> float:
    """What a policy costs: money when priced, else worker-seconds."""
    return o.cost if o.cost is not None else o.worker_seconds


def frontier(outcomes: Sequence[Outcome]) -> list[int]:
    """Indices of the Pareto set on (spend, delay at the SLO's percentile), cheapest first: no other policy
    is at least as cheap and as fast and better in one of the two."""
    order = sorted(range(len(outcomes)), key=lambda i: (spend(outcomes[i]), outcomes[i].slo_delay))
    out: list[int] = []
    best = math.inf
    for i in order:
        if outcomes[i].slo_delay < best:
            out.append(i)
            best = outcomes[i].slo_delay
    return out


def cheapest_meeting(outcomes: Sequence[Outcome]) -> int | None:
    """The cheapest policy meeting the SLO (the faster one on a tie), or None."""
    meeting = [i for i, o in enumerate(outcomes) if o.meets_slo]
    return min(meeting, key=lambda i: (spend(outcomes[i]), outcomes[i].slo_delay)) if meeting else None


def peak_workers_needed(arrivals: Sequence[float], service: Sequence[float], concurrency: int) -> int:
    """Workers that would serve the trace's peak with no queueing: ceil(most requests in flight at once /
    concurrency), for sizing max_workers to the peak."""
    events = sorted([(a, 1) for a in arrivals] + [(a + s, -1) for a, s in zip(arrivals, service, strict=True)])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return max(1, math.ceil(peak / concurrency))
