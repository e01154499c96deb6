"""The autoscaler on real traffic: the Azure LLM inference traces (conv.csv, code.csv) replayed through the
gateway's own autoscaler by `gpuform simulate`'s engine.

World: a 30 s cold start, 8 requests per worker, service time from the trace's tokens (prefill 4000 tok/s,
decode 50 tok/s per request). Policy: RunPod's default (queue_delay scaler, value 4 s; idle timeout 5 s;
min_workers 0), max_workers sized to the trace's peak (most requests in flight at once / 8). Prints, per trace,
worker-seconds (start-up included, as billing counts), p95 delay, cold starts, and how long replaying the
whole trace took (goal: <= 5 s).

Usage: python bench/autoscaler_trace.py [--traces DIR] [--cold-start 30s] [--concurrency 8]
Writes bench/results/autoscaler_trace.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from gpuform.gateway.autoscaler import ScalingPolicy
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
    return {"trace": path.name, "requests": len(arrivals), "span_s": round(trace.span, 1), "max_workers": peak,
            "worker_seconds": round(o.worker_seconds, 1), "p50_delay_s": round(o.p50, 3),
            "p95_delay_s": round(o.p95, 3), "p99_delay_s": round(o.p99, 3), "cold_starts": o.cold_starts,
            "peak_workers": o.peak_workers, "read_s": round(read_s, 3), "replay_s": round(replay_s, 3)}


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
    out = HERE / "results" / "autoscaler_trace.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cold_start": args.cold_start, "concurrency": args.concurrency, "traces": rows},
                              indent=2) + "\n")


if __name__ == "__main__":
    main()
