"""Warm back-to-back `runsync` through a worker built on the runpod SDK, before and after its fix.

The runpod SDK's take loop sleeps 1 s (client-side, rp_scale.JobScaler.get_jobs) whenever it holds as many
jobs as its concurrency, so a worker at the SDK's default concurrency of 1 takes about one job per second
(before). The fix is in the handler: ``concurrency_modifier`` returning 4 (2 is not enough: a job just taken
counts twice, queued and in progress, until the SDK's run loop picks it up; with 3, the job that just ended
may still count when the next is taken, and about one request in five still waits 1 s), so the SDK always
has a take open; the endpoint's ``worker.concurrency: 1`` makes the gateway hold that extra take until the
running job ends, so jobs still run one at a time (after). gpuform's own SDK is measured beside them.

One apply (local provider), one warm worker per endpoint, ``--requests`` sequential `runsync` calls each.
Usage: python bench/runpod_worker_latency.py [--requests 40]
Prints the median, p90 and slowest of each and the ratios; goal: after <= 50 ms (median). (The SDK's run loop looks for a newly taken job
only when a job's result post returns, or 0.1 s later; the gateway answers an idle worker's result once its
next job is on its way, up to 50 ms, so the loop finds that job at once.)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

KEY = "bench-key"
GOAL_MS = 50.0

HANDLER = """
import sys
import runpod

def handler(job):
    return {"echo": job["input"]}

config = {"handler": handler}
if len(sys.argv) > 1:
    config["concurrency_modifier"] = lambda current: int(sys.argv[1])
runpod.serverless.start(config)
"""

GPUFORM_HANDLER = """
from gpuform.worker import start

def handler(job):
    return {"echo": job["input"]}

start(handler)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gpuform(directory: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), *args], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"gpuform {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def config(port: int) -> str:
    workers = {"before": f"{{command: [{sys.executable}, rp_handler.py]}}",
               "two": f"{{command: [{sys.executable}, rp_handler.py, '2'], concurrency: 1}}",
               "three": f"{{command: [{sys.executable}, rp_handler.py, '3'], concurrency: 1}}",
               "after": f"{{command: [{sys.executable}, rp_handler.py, '4'], concurrency: 1}}",
               "sdk": f"{{command: [{sys.executable}, gf_handler.py]}}"}
    endpoints = "".join(f"  {name}: {{pool: here, worker: {worker}, scaling: {{min_workers: 1, max_workers: 1, "
                        f"idle_timeout: 10m}}}}\n" for name, worker in workers.items())
    return textwrap.dedent(f"""\
        pools: {{here: {{provider: local, price_per_gpu_second: {{cpu: 0.00002}}}}}}
        gateway:
          main: {{pool: here, listen: 127.0.0.1:{port}, api_keys: {{bench: {KEY}}}, log_level: warning}}
        endpoints:
        """) + endpoints


def timings_ms(http: httpx.Client, endpoint: str, requests: int) -> list[float]:
    """``requests`` sequential runsync round trips on a warm worker, in ms, sorted."""
    for i in range(3):  # warm: the worker is up and has taken a job
        assert http.post(f"/v2/{endpoint}/runsync", json={"input": {"warm": i}}).json()["status"] == "COMPLETED"
    times = []
    for i in range(requests):
        started = time.perf_counter()
        body = http.post(f"/v2/{endpoint}/runsync", json={"input": {"n": i}}).json()
        times.append((time.perf_counter() - started) * 1000)
        assert body["status"] == "COMPLETED" and body["output"] == {"echo": {"n": i}}, body
    return sorted(times)


def summary(times: list[float]) -> str:
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    slow = sum(1 for t in times if t >= 500)
    return (f"median {statistics.median(times):7.1f} ms  p90 {p90:7.1f} ms  max {times[-1]:7.1f} ms  "
            f"{slow}/{len(times)} over 0.5 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "rp_handler.py").write_text(HANDLER)
        (directory / "gf_handler.py").write_text(GPUFORM_HANDLER)
        port = free_port()
        (directory / "gpuform.yaml").write_text(config(port))
        gpuform(directory, "apply", "--auto-approve")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"},
                              timeout=60, trust_env=False) as http:
                result = {name: timings_ms(http, name, args.requests)
                          for name in ("before", "two", "three", "after", "sdk")}
        finally:
            gpuform(directory, "destroy", "--auto-approve")
    print(f"warm back-to-back runsync, {args.requests} each (local provider, one warm worker each):")
    rows = [("runpod SDK, default concurrency (before)", "before"),
            ("runpod SDK, concurrency_modifier=2 + worker.concurrency: 1", "two"),
            ("runpod SDK, concurrency_modifier=3 + worker.concurrency: 1", "three"),
            ("runpod SDK, concurrency_modifier=4 + worker.concurrency: 1 (after)", "after"),
            ("gpuform SDK (reference)", "sdk")]
    for label, name in rows:
        print(f"  {label:<68} {summary(result[name])}")
    before, after = statistics.median(result["before"]), statistics.median(result["after"])
    ok = after <= GOAL_MS
    print(f"  before/after (medians) {before / after:.1f}x; after vs goal {GOAL_MS:g} ms: ratio "
          f"{after / GOAL_MS:.2f} ({'ok' if ok else 'MISSED'})")


if __name__ == "__main__":
    main()
