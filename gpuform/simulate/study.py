"""A study: one trace, one endpoint's world, one policy or a sweep of them; and how it reads (text, JSON)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gpuform.gateway.autoscaler import ScalingPolicy
from gpuform.simulate.engine import Run, simulate
from gpuform.simulate.model import Settings
from gpuform.simulate.report import Outcome, Slo, cheapest_meeting, evaluate, frontier, policies, spend
from gpuform.simulate.scenario import Basis
from gpuform.simulate.trace import Trace


@dataclass(frozen=True)
class Study:
    trace: Trace
    arrivals: list[float]  # epoch seconds (shifted by --start when given)
    service: list[float]
    basis: Basis
    settings: Settings  # the base policy (configuration, then flags) and its world
    slo: Slo
    service_note: str


@dataclass
class Result:
    outcomes: list[Outcome]
    frontier: list[int]
    chosen: int | None  # the cheapest meeting the SLO
    timeline: Run | None  # the chosen (or the only) policy, replayed with its timeline
    elapsed: float


def run_study(study: Study, axes: dict[str, list[Any]] | None, timeline: bool = False) -> Result:
    """Simulate the base policy, or every policy of the sweep ``axes``; replay the chosen one with its
    timeline when ``timeline`` (for a plot)."""
    started = time.perf_counter()
    candidates = policies(study.settings.policy, axes) if axes else [study.settings.policy]
    outcomes = [evaluate(study.arrivals, study.service, replace(study.settings, policy=p), study.slo)[0]
                for p in candidates]
    chosen = cheapest_meeting(outcomes)
    shown: Run | None = None
    if timeline:
        policy = outcomes[chosen if chosen is not None else 0].policy
        shown = simulate(study.arrivals, study.service, replace(study.settings, policy=policy, timeline=True))
    return Result(outcomes, frontier(outcomes), chosen, shown, time.perf_counter() - started)


# ---- JSON ---------------------------------------------------------------------------------------------


def to_json(study: Study, result: Result) -> dict[str, Any]:
    s, b = study.settings, study.basis
    return {
        "endpoint": b.name,
        "trace": {"file": study.trace.name, "requests": len(study.arrivals), "t0": _iso(study.arrivals[0]),
                  "span_seconds": round(study.arrivals[-1] - study.arrivals[0], 3)},
        "model": {"cold_start": str(s.cold_start), "concurrency": s.concurrency, "service": study.service_note,
                  "reconcile_interval": s.reconcile_interval, "price_per_worker_second": s.price_per_second,
                  "gpu_type": b.gpu_type, "warm_start": s.warm_start, "seed": s.seed},
        "slo": {"percentile": study.slo.percentile, "seconds": study.slo.seconds},
        "policies": [o.to_json() for o in result.outcomes],
        "frontier": result.frontier,
        "chosen": result.chosen,
        "elapsed_seconds": round(result.elapsed, 3),
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


# ---- text ---------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{sec:02d}s"


def describe_policy(p: ScalingPolicy) -> str:
    learned = " · keep-alive learned" if p.keep_alive == "learned" else ""
    return (f"min {p.min_workers} · max {p.max_workers} · idle {p.idle_timeout:g}s · "
            f"{p.scaler} {p.scaler_value:g}{learned}")


def _money(o: Outcome) -> str:
    return "no price" if o.cost is None else f"${o.cost:,.2f}"


def _head(study: Study) -> list[str]:
    s, b = study.settings, study.basis
    price = (f"${s.price_per_second:g} per worker-second ({b.gpu_type})" if s.price_per_second is not None
             else "no price for its GPU types in the pool (cost shown as worker-seconds)")
    return [f"Simulated endpoint.{b.name} on {study.trace.name}: {len(study.arrivals):,} requests over "
            f"{_duration(study.arrivals[-1] - study.arrivals[0])} from {_iso(study.arrivals[0])}",
            f"  cold start {s.cold_start} · {s.concurrency} request(s) per worker · service {study.service_note}",
            f"  {price} · reconcile every {s.reconcile_interval:g}s · SLO {study.slo}", ""]


def render_one(study: Study, o: Outcome) -> str:
    share = o.over_slo / o.requests * 100 if o.requests else 0.0
    met = "met" if o.meets_slo else "MISSED"
    lines = [
        *_head(study),
        f"policy          {describe_policy(o.policy)}",
        f"worker-seconds  {o.worker_seconds:,.1f} ({o.worker_seconds / 3600:,.2f} worker-hours, start-up included)",
        f"cost            {_money(o)}",
        f"cold starts     {o.cold_starts}" + (f" (and {o.wakes} wakes from sleep)" if o.wakes else "")
        + f" · at most {o.peak_workers} worker(s) at once",
        f"delay           p50 {_duration(o.p50)} · p95 {_duration(o.p95)} · p99 {_duration(o.p99)} · "
        f"max {_duration(o.max_delay)}",
        f"over the SLO    {o.over_slo:,} request(s) ({share:.1f}%) waited over {study.slo.seconds:g}s; "
        f"{study.slo} {met}",
    ]
    if o.unserved:
        lines.append(f"never served    {o.unserved:,} request(s) (the spending cap held scale-up)")
    lines.append(f"replayed in     {o.replay_seconds:.2f}s")
    return "\n".join(lines)


def render_sweep(study: Study, result: Result) -> str:
    outs = result.outcomes
    lines = [*_head(study), f"{len(outs)} policies simulated in {result.elapsed:.1f}s; the cost/latency frontier "
                            f"({len(result.frontier)} policies, cheapest first):", ""]
    lines.append(f"  {'min':>3} {'max':>3} {'idle':>6} {'scaler':<13} {'value':>5} {'worker-s':>10} {'cost':>10} "
                 f"{'cold':>5} {'p50':>7} {'p95':>7} {'p99':>7} {'over SLO':>8}")
    for i in result.frontier:
        o, p = outs[i], outs[i].policy
        mark = "  ← cheapest meeting the SLO" if i == result.chosen else ""
        lines.append(f"  {p.min_workers:>3} {p.max_workers:>3} {p.idle_timeout:>5g}s {p.scaler:<13} "
                     f"{p.scaler_value:>5g} {o.worker_seconds:>10,.0f} {_money(o):>10} {o.cold_starts:>5} "
                     f"{_duration(o.p50):>7} {_duration(o.p95):>7} {_duration(o.p99):>7} {o.over_slo:>8,}{mark}")
    lines.append("")
    if result.chosen is None:
        fastest = min(range(len(outs)), key=lambda i: (outs[i].slo_delay, spend(outs[i])))
        lines.append(f"No policy meets {study.slo}; the fastest, {describe_policy(outs[fastest].policy)}, has "
                     f"p{study.slo.percentile:g} {_duration(outs[fastest].slo_delay)}. Widen the sweep "
                     "(more min_workers, a lower scaler_value, a higher max_workers).")
    else:
        o = outs[result.chosen]
        lines.append(f"Cheapest meeting {study.slo}: {describe_policy(o.policy)} — {_money(o)}, "
                     f"{o.worker_seconds:,.0f} worker-seconds, {o.cold_starts} cold starts, "
                     f"p{study.slo.percentile:g} {_duration(o.slo_delay)}")
    return "\n".join(lines)
