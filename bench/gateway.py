"""Gateway overhead and throughput, in production shape: `gpuform apply` starts the gateway (uvicorn on a real
socket, SQLite on disk) and the worker (a separate process running the gpuform worker SDK) with the local
provider; the baseline is the same handler behind uvicorn, called directly.

(a) added latency of a warm /runsync vs a direct HTTP call, p50/p99, with a per-hop breakdown;
(b) jobs per second submit -> complete with N concurrent /runsync clients.

Targets on a 2-core machine: <= 3 ms p50 and <= 10 ms p99 added, >= 500 jobs/s (goal: 1 / 3 ms, 2000 jobs/s).
With ``--store postgres`` a second deployment follows the default (SQLite) one in the same run: its gateway on
a PostgreSQL store (``--pg-url``, else $GPUFORM_BENCH_PG_URL, else the test cluster of .ci/setup/postgres.sh)
with ``--replicas N`` processes (ports port..port+N-1), the clients spread over the replicas; it prints jobs/s
and p50 added beside SQLite's, with the ratios the issue sets (>= 0.5x SQLite's jobs/s, <= 3 ms p50 added).
Usage: python bench/gateway.py [--requests 2000] [--clients 32] [--concurrency 32] [--seconds 10]
                               [--store postgres [--replicas 2] [--pg-url URL]]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
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


PG_INFO = Path("/var/lib/gpuform-test/postgres.json")


@dataclass(frozen=True)
class Shape:
    """One deployment the bench measures: its store and how many gateway replicas."""

    store: str = "sqlite"
    replicas: int = 1
    pg_url: str = ""
    schema: str = ""

    @property
    def label(self) -> str:
        return "sqlite" if self.store == "sqlite" else f"postgres, {self.replicas} replica(s)"

    def yaml(self) -> str:
        if self.store == "sqlite":
            return ""
        return (f'    store: {{type: postgres, url: "${{env.GPUFORM_BENCH_PG_URL}}", schema_name: {self.schema}}}\n'
                f"    replicas: {self.replicas}\n")


def config(port: int, concurrency: int, shape: Shape = Shape()) -> str:
    return textwrap.dedent(f"""
        pools:
          here: {{provider: local, price_per_gpu_second: {{cpu: 0.00001}}}}
        gateway:
          main:
            pool: here
            listen: 127.0.0.1:{port}
            api_keys: {{bench: {KEY}}}
            log_level: warning
        GATEWAY_EXTRA
        endpoints:
          bench:
            pool: here
            worker: {{command: [python, {HERE / "bench_worker.py"}], concurrency: {concurrency}}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 1h}}
        """).replace("GATEWAY_EXTRA\n", shape.yaml())


def gpuform(directory: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), *args], check=True,
                   capture_output=True, env={**os.environ, "NO_COLOR": "1", **(env or {})})


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


async def throughput(urls: list[str], clients: int, seconds: float) -> Load:
    """``clients`` connections spread over ``urls`` (the replicas), each posting /runsync back to back (a lean
    client: see loadgen.py). A request still unanswered 10 s after the run's end counts as not completed."""
    latencies: list[float] = []
    completed_at: list[float] = []
    deadline = time.monotonic() + seconds

    async def one_client(url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        conn = Connection(host, int(port), {"Authorization": f"Bearer {KEY}"})
        body = b'{"input": {"x": 1}}'
        try:
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                status, data = await asyncio.wait_for(conn.post("/v2/bench/runsync", body),
                                                      deadline - time.monotonic() + 10)
                if status == 200 and b'"COMPLETED"' in data:
                    now = time.perf_counter()
                    latencies.append((now - sent) * 1000)
                    completed_at.append(now)
        except TimeoutError:
            pass
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*(one_client(urls[i % len(urls)]) for i in range(clients)))
    ordered = sorted(completed_at)
    gap = max((b - a for a, b in itertools.pairwise(ordered)), default=0.0) * 1000
    return Load(len(latencies) / (time.monotonic() - started), len(latencies), latencies, gap)


@dataclass
class Run:
    """One deployment's figures."""

    shape: Shape
    direct_ms: list[float]
    gateway_ms: list[float]
    hops: list[dict[str, float]]
    load: Load

    @property
    def p50_added(self) -> float:
        return percentile(self.gateway_ms, 0.5) - percentile(self.direct_ms, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32, help="jobs one worker runs at once")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite",
                        help="postgres: also measure a gateway on PostgreSQL, beside the default SQLite one")
    parser.add_argument("--replicas", type=int, default=1, help="gateway processes of the postgres run")
    parser.add_argument("--pg-url", default=os.environ.get("GPUFORM_BENCH_PG_URL", ""))
    args = parser.parse_args()
    shapes = [Shape()]
    if args.store == "postgres":
        shapes.append(Shape("postgres", args.replicas, args.pg_url or _test_cluster_url(),
                            f"bench_{os.getpid()}"))
    runs = [measure(shape, args) for shape in shapes]
    report(runs[0].direct_ms, runs[0].gateway_ms, runs[0].hops, runs[0].load, args)
    if len(runs) > 1:
        compare(runs[0], runs[1], args)


def _test_cluster_url() -> str:
    if not PG_INFO.exists():
        raise SystemExit("--store postgres needs --pg-url (or $GPUFORM_BENCH_PG_URL, or .ci/setup/postgres.sh)")
    return str(json.loads(PG_INFO.read_text())["url"])


def measure(shape: Shape, args: argparse.Namespace) -> Run:
    """Apply one deployment of ``shape``, measure it, destroy it (and its postgres schema)."""
    env = {"GPUFORM_BENCH_PG_URL": shape.pg_url} if shape.pg_url else {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        port, direct_port = free_port_run(shape.replicas), free_port()
        (directory / "gpuform.yaml").write_text(config(port, args.concurrency, shape))
        direct = subprocess.Popen([sys.executable, str(HERE / "direct_server.py"), str(direct_port)])
        urls = [f"http://127.0.0.1:{port + i}" for i in range(shape.replicas)]
        try:
            gpuform(directory, "apply", "--auto-approve", env=env)
            base = f"http://127.0.0.1:{direct_port}"
            _wait_ready(urls[0], base)
            direct_ms, _ = latency(base, "/", args.requests)
            gateway_ms, hops = latency(urls[0], "/v2/bench/runsync", args.requests, timings=True)
            load = asyncio.run(throughput(urls, args.clients, args.seconds))
        finally:
            direct.terminate()
            gpuform(directory, "destroy", "--auto-approve", env=env)
            if shape.schema:
                _drop_schema(shape.pg_url, shape.schema)
    return Run(shape, direct_ms, gateway_ms, hops, load)


def free_port_run(count: int) -> int:
    """A port whose ``count - 1`` successors are free too (replica i binds port + i)."""
    while True:
        port = free_port()
        if all(_free(port + i) for i in range(1, count)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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


def compare(sqlite: Run, postgres: Run, args: argparse.Namespace) -> None:
    """The postgres run beside the SQLite one, with the issue's ratios."""
    ratio = postgres.load.rate / sqlite.load.rate if sqlite.load.rate else 0.0
    print()
    print(f"store comparison, {args.clients} clients (spread over the replicas), one run:")
    for run in (sqlite, postgres):
        print(f"    {run.shape.label:28s} {run.load.rate:7.0f} jobs/s   p50 added {run.p50_added:6.2f} ms   "
              f"p99 under load {percentile(run.load.latencies_ms, 0.99):7.2f} ms")
    print(f"    postgres / sqlite jobs/s    {ratio:5.2f}  (target >= 0.50, {'ok' if ratio >= 0.5 else 'MISSED'})")
    print(f"    postgres p50 added          {postgres.p50_added:5.2f} ms (target <= 3.00, "
          f"{'ok' if postgres.p50_added <= 3.0 else 'MISSED'})")


if __name__ == "__main__":
    main()
