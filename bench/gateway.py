"""Gateway overhead and throughput, in production shape: `gpuform apply` starts the gateway (uvicorn on a real
socket, SQLite on disk) and the worker (a separate process running the gpuform worker SDK) with the local
provider; the baseline is the same handler behind uvicorn, called directly.

(a) added latency of a warm /runsync vs a direct HTTP call, p50/p99, with a per-hop breakdown;
(b) jobs per second submit -> complete with N concurrent /runsync clients.

Targets on a 2-core machine: <= 3 ms p50 and <= 10 ms p99 added, >= 500 jobs/s (goal: 1 / 3 ms, 2000 jobs/s).
Usage: python bench/gateway.py [--requests 2000] [--clients 32] [--concurrency 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from loadgen import Connection

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
KEY = "bench-key"
TARGETS = {"p50_ms": 3.0, "p99_ms": 10.0, "jobs_per_s": 500.0}
GOALS = {"p50_ms": 1.0, "p99_ms": 3.0, "jobs_per_s": 2000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(port: int, concurrency: int) -> str:
    return textwrap.dedent(f"""
        pools:
          here: {{provider: local, price_per_gpu_second: {{cpu: 0.00001}}}}
        gateway:
          main:
            pool: here
            listen: 127.0.0.1:{port}
            api_keys: {{bench: {KEY}}}
            log_level: warning
        endpoints:
          bench:
            pool: here
            worker: {{command: [python, {HERE / "bench_worker.py"}], concurrency: {concurrency}}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 1h}}
        """)


def gpuform(directory: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), *args], check=True,
                   capture_output=True, env={**os.environ, "NO_COLOR": "1"})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(url: str, path: str, n: int, timings: bool = False) -> tuple[list[float], list[dict[str, float]]]:
    headers = {"Authorization": f"Bearer {KEY}"} | ({"X-Gpuform-Timings": "1"} if timings else {})
    out, hops = [], []
    with httpx.Client(base_url=url, headers=headers, trust_env=False) as client:
        for i in range(n + n // 5):
            sent = time.time()
            started = time.perf_counter()
            body = client.post(path, json={"input": {"i": i}}).json()
            elapsed = time.perf_counter() - started
            received = time.time()
            assert body["status"] == "COMPLETED", body
            if i >= n // 5:  # the first fifth warms up
                out.append(elapsed * 1000)
                if timings:
                    ts = body["timestamps"]
                    hops.append({"client -> accepted (parse, auth, SQLite insert)": ts["created"] - sent,
                                 "queued -> taken by the worker": ts["started"] - ts["created"],
                                 "worker: deliver, run handler, post result": ts["completed"] - ts["started"],
                                 "result stored -> client has the response": received - ts["completed"]})
    return out, hops


@dataclass
class Load:
    """What the concurrent run measured: completions, their latencies and when each completed."""

    rate: float
    total: int
    latencies_ms: list[float]
    longest_gap_ms: float  # the longest window in which no response completed


async def throughput(url: str, clients: int, seconds: float) -> Load:
    """``clients`` connections, each posting /runsync back to back (a lean client: see loadgen.py)."""
    host, _, port = url.removeprefix("http://").partition(":")
    latencies: list[float] = []
    completed_at: list[float] = []
    deadline = time.monotonic() + seconds

    async def one_client() -> None:
        conn = Connection(host, int(port), {"Authorization": f"Bearer {KEY}"})
        body = b'{"input": {"x": 1}}'
        try:
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                status, data = await conn.post("/v2/bench/runsync", body)
                if status == 200 and b'"COMPLETED"' in data:
                    now = time.perf_counter()
                    latencies.append((now - sent) * 1000)
                    completed_at.append(now)
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    ordered = sorted(completed_at)
    gap = max((b - a for a, b in itertools.pairwise(ordered)), default=0.0) * 1000
    return Load(len(latencies) / (time.monotonic() - started), len(latencies), latencies, gap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32, help="jobs one worker runs at once")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        port, direct_port = free_port(), free_port()
        (directory / "gpuform.yaml").write_text(config(port, args.concurrency))
        direct = subprocess.Popen([sys.executable, str(HERE / "direct_server.py"), str(direct_port)])
        try:
            gpuform(directory, "apply", "--auto-approve")
            gw, base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{direct_port}"
            _wait_ready(gw, base)
            direct_ms, _ = latency(base, "/", args.requests)
            gateway_ms, hops = latency(gw, "/v2/bench/runsync", args.requests, timings=True)
            load = asyncio.run(throughput(gw, args.clients, args.seconds))
        finally:
            direct.terminate()
            gpuform(directory, "destroy", "--auto-approve")
    report(direct_ms, gateway_ms, hops, load, args)


def _wait_ready(gw: str, base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            body = httpx.post(f"{gw}/v2/bench/runsync", json={"input": 0}, headers={"Authorization": f"Bearer {KEY}"},
                              timeout=30).json()
            httpx.post(base, json={"input": 0})
            if body.get("status") == "COMPLETED":
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the gateway's worker did not come up")


def report(direct_ms: list[float], gateway_ms: list[float], hops: list[dict[str, float]], load: Load,
           args: argparse.Namespace) -> None:
    rate, total = load.rate, load.total
    p50_added = percentile(gateway_ms, 0.5) - percentile(direct_ms, 0.5)
    p99_added = percentile(gateway_ms, 0.99) - percentile(direct_ms, 0.99)
    print(f"(a) warm /runsync, {len(gateway_ms)} sequential requests after warm-up")
    print(f"    direct HTTP to the handler   p50 {percentile(direct_ms, 0.5):7.3f} ms   p99 {percentile(direct_ms, 0.99):7.3f} ms")
    print(f"    through the gateway          p50 {percentile(gateway_ms, 0.5):7.3f} ms   p99 {percentile(gateway_ms, 0.99):7.3f} ms")
    print("    per hop (median):")
    for hop in hops[0]:
        print(f"      {hop:52s} {statistics.median(h[hop] for h in hops) * 1000:7.3f} ms")
    print(f"(b) {args.clients} concurrent /runsync clients, worker concurrency {args.concurrency}, {args.seconds:g} s: "
          f"{total} jobs, {rate:.0f} jobs/s")
    p50, p99 = percentile(load.latencies_ms, 0.5), percentile(load.latencies_ms, 0.99)
    print(f"    latency under load: p50 {p50:.2f} ms, p99 {p99:.2f} ms (p99/p50 {p99 / p50:.2f}, target <= 3.0, "
          f"{'ok' if p99 <= 3 * p50 else 'MISSED'}); longest window with no completed response "
          f"{load.longest_gap_ms:.1f} ms (target <= 100, {'ok' if load.longest_gap_ms <= 100 else 'MISSED'})")
    rows = [("added latency p50", p50_added, "ms", "p50_ms", False), ("added latency p99", p99_added, "ms", "p99_ms", False),
            ("throughput", rate, "jobs/s", "jobs_per_s", True)]
    print()
    for name, value, unit, key, higher in rows:
        target, goal = TARGETS[key], GOALS[key]
        ok = value >= target if higher else value <= target
        ratio = value / target
        print(f"{name:20s} {value:9.2f} {unit:6s} target {target:7.1f} (ratio {ratio:5.2f}, {'ok' if ok else 'MISSED'})"
              f"   goal {goal:7.1f} ({'reached' if (value >= goal if higher else value <= goal) else 'not yet'})")


if __name__ == "__main__":
    main()
