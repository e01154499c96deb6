"""The autoscaler on real traffic: the Azure LLM inference traces (conv.csv, code.csv) replayed through the
gateway's own autoscaler by `gpuform simulate`'s engine.

World: a 30 s cold start, 8 requests per worker, service time from the trace's tokens (prefill 4000 tok/s,
decode 50 tok/s per request). Policy: RunPod's default (queue_delay scaler, value 4 s; idle timeout 5 s;
min_workers 0), max_workers sized to the trace's peak (most requests in flight at once / 8). Prints, per trace,
worker-seconds (start-up included, as billing counts), p95 delay, cold starts, and how long replaying the
whole trace took (goal: <= 5 s).

Then the policies of issue 14 item 3 (the learned keep-alive, the rate_forecast scaler, and both) on the same
world; the best per trace (the lowest p95 delay among those within RunPod's worker-seconds, else the cheapest)
is printed beside RunPod's default with the ratios (goal: <= 1.0x worker-seconds at <= 0.5x p95 delay).

Usage: python bench/autoscaler_trace.py [--traces DIR] [--cold-start 30s] [--concurrency 8]
Writes bench/results/autoscaler_trace.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpuform.gateway.autoscaler import ScalingPolicy
from gpuform.gateway.demand import Learned
from gpuform.simulate.engine import simulate
from gpuform.simulate.model import ServiceModel, Settings, parse_cold_start
from gpuform.simulate.report import Slo, outcome, peak_workers_needed
from gpuform.simulate.trace import read_trace

HERE = Path(__file__).resolve().parent
DEFAULT_TRACES = Path(os.environ.get("GPUFORM_TRACES_DIR") or HERE.parent.parent / "shared" / "data" / "azure-llm-2023")
GOAL_REPLAY_S = 5.0


def runpod_default(max_workers: int) -> ScalingPolicy:
    return ScalingPolicy(min_workers=0, max_workers=max_workers, idle_timeout=5.0, scaler="queue_delay",
                         scaler_value=4.0)


def candidates(base: ScalingPolicy) -> dict[str, ScalingPolicy]:
    """The new policies tried (RunPod's idle 5 s kept for the burst workers; learned gaps in 10 s bins)."""
    learned = replace(base, keep_alive="learned", learned=Learned(bin=10.0))
    out = {"queue_delay 4 + learned keep-alive": learned}
    for value in (8.0, 6.0, 4.0):
        out[f"rate_forecast {value:g}"] = replace(base, scaler="rate_forecast", scaler_value=value)
        out[f"rate_forecast {value:g} + learned keep-alive"] = replace(learned, scaler="rate_forecast",
                                                                       scaler_value=value)
    return out


def best_new(arrivals: list[float], service: list[float], settings: Settings,
             default: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for name, policy in candidates(settings.policy).items():
        trial = replace(settings, policy=policy)
        o = outcome(simulate(arrivals, service, trial), trial, Slo(95, 2.0), 0.0)
        rows.append({"policy": name, "worker_seconds": round(o.worker_seconds, 1), "p95_delay_s": round(o.p95, 3),
                     "cold_starts": o.cold_starts})
    within = [r for r in rows if r["worker_seconds"] <= default["worker_seconds"]]
    best = min(within, key=lambda r: (r["p95_delay_s"], r["worker_seconds"])) if within else min(rows, key=lambda r: r["worker_seconds"])
    ws_ratio = best["worker_seconds"] / default["worker_seconds"]
    p95_ratio = best["p95_delay_s"] / default["p95_delay_s"] if default["p95_delay_s"] else None
    met = ws_ratio <= 1.0 and (best["p95_delay_s"] <= 0.5 * default["p95_delay_s"])
    return {**best, "worker_seconds_ratio": round(ws_ratio, 3),
            "p95_ratio": None if p95_ratio is None else round(p95_ratio, 3), "goal_met": met, "tried": rows}


def bench_trace(path: Path, cold_start: str, concurrency: int) -> dict[str, Any]:
    started = time.perf_counter()
    trace = read_trace(path)
    read_s = time.perf_counter() - started
    arrivals, service = [r.at for r in trace.requests], ServiceModel().times(trace)
    peak = peak_workers_needed(arrivals, service, concurrency)
    settings = Settings(runpod_default(peak), parse_cold_start(cold_start), concurrency)
    started = time.perf_counter()
    run = simulate(arrivals, service, settings)
    replay_s = time.perf_counter() - started
    o = outcome(run, settings, Slo(95, 2.0), replay_s)
    row = {"trace": path.name, "requests": len(arrivals), "span_s": round(trace.span, 1), "max_workers": peak,
           "worker_seconds": round(o.worker_seconds, 1), "p50_delay_s": round(o.p50, 3),
           "p95_delay_s": round(o.p95, 3), "p99_delay_s": round(o.p99, 3), "cold_starts": o.cold_starts,
           "peak_workers": o.peak_workers, "read_s": round(read_s, 3), "replay_s": round(replay_s, 3)}
    return {**row, "best_new": best_new(arrivals, service, settings, row)}


def print_comparison(rows: list[dict[str, Any]]) -> None:
    print("\nRunPod's default against the best new policy (issue 14 item 3), per trace:\n")
    print(f"{'trace':<9} {'policy':<36} {'worker-s':>9} {'p95':>8} {'cold':>5}")
    for r in rows:
        b = r["best_new"]
        print(f"{r['trace']:<9} {'RunPod default':<36} {r['worker_seconds']:>9,.0f} {r['p95_delay_s']:>7.2f}s "
              f"{r['cold_starts']:>5}")
        print(f"{'':<9} {b['policy']:<36} {b['worker_seconds']:>9,.0f} {b['p95_delay_s']:>7.2f}s {b['cold_starts']:>5}")
        p95 = "n/a (default p95 is 0)" if b["p95_ratio"] is None else f"{b['p95_ratio']:.2f}x"
        print(f"{'':<9} ratios: worker-seconds {b['worker_seconds_ratio']:.2f}x, p95 delay {p95} -> goal "
              f"(<= 1.0x at <= 0.5x): {'met' if b['goal_met'] else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    parser.add_argument("--cold-start", default="30s")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rows = [bench_trace(args.traces / name, args.cold_start, args.concurrency) for name in ("conv.csv", "code.csv")]
    print(f"RunPod's default policy (queue_delay 4 s, idle 5 s, min 0), cold start {args.cold_start}, "
          f"{args.concurrency} requests per worker, max workers sized to the peak\n")
    print(f"{'trace':<9} {'requests':>8} {'max wk':>6} {'worker-s':>9} {'p50':>7} {'p95':>7} {'p99':>7} "
          f"{'cold':>5} {'replay':>7}")
    for r in rows:
        print(f"{r['trace']:<9} {r['requests']:>8,} {r['max_workers']:>6} {r['worker_seconds']:>9,.0f} "
              f"{r['p50_delay_s']:>6.2f}s {r['p95_delay_s']:>6.2f}s {r['p99_delay_s']:>6.2f}s {r['cold_starts']:>5} "
              f"{r['replay_s']:>6.2f}s")
    worst = max(r["replay_s"] for r in rows)
    print(f"\nreplay of a whole trace: {worst:.2f}s at most (goal <= {GOAL_REPLAY_S:g}s: "
          f"{'met' if worst <= GOAL_REPLAY_S else 'MISSED'})")
    print_comparison(rows)
    out = HERE / "results" / "autoscaler_trace.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cold_start": args.cold_start, "concurrency": args.concurrency, "traces": rows},
                              indent=2) + "\n")


if __name__ == "__main__":
    main()
