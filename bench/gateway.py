"""Gateway overhead and throughput, in production shape: `gpuform apply` starts the gateway (uvicorn on a real
socket, SQLite on disk) and the worker (a separate process running the gpuform worker SDK) with the local
provider; the baseline is the same handler behind uvicorn, called directly.

(a) added latency of a warm /runsync vs a direct HTTP call, p50/p99, with a per-hop breakdown;
(b) jobs per second submit -> complete with N concurrent /runsync clients.

Targets on a 2-core machine: <= 3 ms p50 and <= 10 ms p99 added, >= 500 jobs/s (goal: 1 / 3 ms, 2000 jobs/s).

``--store postgres --replicas 2`` then runs the same on PostgreSQL (``--postgres-url``, default the test
cluster's; a schema of its own, dropped afterwards) with a second replica process started from the applied
one's configuration: (a) through each replica (the worker polls the first, so the second one's jobs cross
replicas through the shared queue and LISTEN/NOTIFY), (b) with the clients split across both, the ratios to
SQLite's figures of the same run (targets: >= 0.5x the jobs/s, <= 3 ms p50 added), and (c) failover: the
leading replica killed with -9, seconds until the other one leads.
Usage: python bench/gateway.py [--requests 2000] [--clients 32] [--concurrency 32] [--seconds 10]
                               [--store sqlite|postgres] [--replicas 2] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def config(port: int, concurrency: int, store: str = "") -> str:
    return textwrap.dedent(f"""
        pools:
          here: {{provider: local, price_per_gpu_second: {{cpu: 0.00001}}}}
        gateway:
          main:
            pool: here
            listen: 127.0.0.1:{port}
            api_keys: {{bench: {KEY}}}
            log_level: warning
            {store}
        endpoints:
          bench:
            pool: here
            worker: {{command: [python, {HERE / "bench_worker.py"}], concurrency: {concurrency}}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 1h}}
        """)


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
                    hops.append({"client -> accepted (parse, auth, store insert)": ts["created"] - sent,
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
    """``clients`` connections (spread over ``urls``), each posting /runsync back to back (a lean client: see
    loadgen.py)."""
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
                status, data = await conn.post("/v2/bench/runsync", body)
                if status == 200 and b'"COMPLETED"' in data:
                    now = time.perf_counter()
                    latencies.append((now - sent) * 1000)
                    completed_at.append(now)
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.gather(*(one_client(urls[i % len(urls)]) for i in range(clients)))
    ordered = sorted(completed_at)
    gap = max((b - a for a, b in itertools.pairwise(ordered)), default=0.0) * 1000
    return Load(len(latencies) / (time.monotonic() - started), len(latencies), latencies, gap)


@dataclass
class Run:
    """One store's figures: the baseline, (a) through each replica, (b) the concurrent load, (c) failover."""

    direct_ms: list[float]
    gateway_ms: list[float]
    hops: list[dict[str, float]]
    load: Load
    second_ms: list[float] = field(default_factory=list)
    failover_s: float | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32, help="jobs one worker runs at once")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="postgres: SQLite first, then PostgreSQL with --replicas, and their ratios")
    parser.add_argument("--replicas", type=int, default=2, choices=(1, 2), help="gateway processes on postgres")
    parser.add_argument("--postgres-url", default=None, help="default: the test cluster (.ci/setup/postgres.sh)")
    args = parser.parse_args()
    direct_port = free_port()
    direct = subprocess.Popen([sys.executable, str(HERE / "direct_server.py"), str(direct_port)])
    try:
        base = f"http://127.0.0.1:{direct_port}"
        sqlite = run_store(args, base, "")
        report(sqlite.direct_ms, sqlite.gateway_ms, sqlite.hops, sqlite.load, args)
        if args.store == "postgres":
            url = args.postgres_url or json.loads(Path("/var/lib/gpuform-test/postgres.json").read_text())["url"]
            schema = "bench_" + uuid.uuid4().hex[:10]
            try:
                shared = run_store(args, base, url, schema)
            finally:
                _drop_schema(url, schema)
            report_postgres(sqlite, shared, args)
    finally:
        direct.terminate()


def run_store(args: argparse.Namespace, base: str, pg_url: str, schema: str = "") -> Run:
    """Apply the bench on SQLite (``pg_url`` empty) or PostgreSQL, measure, destroy."""
    with tempfile.TemporaryDirectory() as tmp:
        directory, port = Path(tmp), free_port()
        store = f'store: {{type: postgres, url: "${{env.BENCH_DB_URL}}", schema_name: {schema}}}' if pg_url else ""
        (directory / "gpuform.yaml").write_text(config(port, args.concurrency, store))
        env = {"BENCH_DB_URL": pg_url} if pg_url else None
        gw = f"http://127.0.0.1:{port}"
        try:
            gpuform(directory, "apply", "--auto-approve", env=env)
            _wait_ready(gw, base)
            with replicas(directory, gw, args.replicas if pg_url else 1) as urls:
                run = Run(latency(base, "/", args.requests)[0],
                          *latency(gw, "/v2/bench/runsync", args.requests, timings=True), Load(0, 0, [1.0], 0))
                if len(urls) > 1:
                    run.second_ms, _ = latency(urls[1], "/v2/bench/runsync", args.requests)
                run.load = asyncio.run(throughput(urls, args.clients, args.seconds))
                if len(urls) > 1:
                    run.failover_s = failover(directory, urls[1])
        finally:
            gpuform(directory, "destroy", "--auto-approve", env=env)
    return run


def _gateway_dir(directory: Path) -> Path:
    state = json.loads((directory / "state" / "gpuform.state.json").read_text())
    pool = next(r for r in state["resources"] if r["kind"] == "pool")
    return Path(pool["computed"]["data_dir"]) / "gateways" / "main"


@contextmanager
def replicas(directory: Path, first: str, count: int) -> Iterator[list[str]]:
    """The applied gateway and, for ``count`` 2, a second process from its configuration on another port."""
    if count == 1:
        yield [first]
        return
    port = free_port()
    second = subprocess.Popen([sys.executable, "-m", "gpuform.gateway", "--config",
                               str(_gateway_dir(directory) / "config.json"), "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, None)
        yield [first, url]
    finally:
        second.terminate()
        second.wait(30)


def _leads(directory: Path, url: str) -> bool:
    key = (directory / "state" / "secrets" / "gateway.main.admin_key").read_text()
    try:
        resp = httpx.get(f"{url}/admin/status", headers={"Authorization": f"Bearer {key}"}, timeout=2)
        return bool(resp.json().get("replica", {}).get("leader"))
    except (httpx.HTTPError, ValueError):
        return False


def failover(directory: Path, second: str) -> float:
    """Kill -9 the leading (applied) replica, its supervisor held stopped; seconds until ``second`` leads.
    The supervisor then restarts it (destroy stops the workers through it)."""
    gdir = _gateway_dir(directory)
    pids = json.loads((gdir / "supervisor.pid").read_text())
    os.kill(pids["pid"], signal.SIGSTOP)
    try:
        os.kill(pids["child"], signal.SIGKILL)
        killed = time.monotonic()
        while not _leads(directory, second) and time.monotonic() - killed < 30:
            time.sleep(0.02)
        took = time.monotonic() - killed
    finally:
        os.kill(pids["pid"], signal.SIGCONT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _answers(f"http://{_listen(gdir)}"):
        time.sleep(0.2)
    return took


def _listen(gdir: Path) -> str:
    listen: str = json.loads((gdir / "config.json").read_text())["gateway"]["listen"]
    return listen


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _wait_ready(gw: str, base: str | None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            body = httpx.post(f"{gw}/v2/bench/runsync", json={"input": 0}, headers={"Authorization": f"Bearer {KEY}"},
                              timeout=30).json()
            if base:
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


def report_postgres(sqlite: Run, shared: Run, args: argparse.Namespace) -> None:
    """PostgreSQL with replicas against SQLite, both measured in this run."""
    def added(run_ms: list[float], direct: list[float], q: float) -> float:
        return percentile(run_ms, q) - percentile(direct, q)

    print(f"\nPostgreSQL, {args.replicas} replica(s) (the worker polls the first)")
    for name, ms in (("through the first replica", shared.gateway_ms), ("through the second replica", shared.second_ms)):
        if ms:
            print(f"    {name:28s} p50 {percentile(ms, 0.5):7.3f} ms (added {added(ms, shared.direct_ms, 0.5):6.3f})"
                  f"   p99 {percentile(ms, 0.99):7.3f} ms (added {added(ms, shared.direct_ms, 0.99):6.3f})")
    print("    per hop (median, first replica):")
    for hop in shared.hops[0]:
        print(f"      {hop:52s} {statistics.median(h[hop] for h in shared.hops) * 1000:7.3f} ms")
    load = shared.load
    print(f"    {args.clients} concurrent /runsync clients over the replicas, {args.seconds:g} s: {load.total} jobs, "
          f"{load.rate:.0f} jobs/s; p50 {percentile(load.latencies_ms, 0.5):.2f} ms, "
          f"p99 {percentile(load.latencies_ms, 0.99):.2f} ms; longest gap {load.longest_gap_ms:.1f} ms")
    if shared.failover_s is not None:
        print(f"    failover: kill -9 of the leading replica -> the other leads after {shared.failover_s:.2f} s "
              f"(target <= 5 s, {'ok' if shared.failover_s <= 5 else 'MISSED'})")
    p50 = added(shared.gateway_ms, shared.direct_ms, 0.5)
    ratio = shared.load.rate / sqlite.load.rate
    print()
    print(f"{'postgres/sqlite jobs/s':24s} {ratio:6.2f}x  ({shared.load.rate:.0f} / {sqlite.load.rate:.0f})  target >= 0.5 "
          f"({'ok' if ratio >= 0.5 else 'MISSED'})")
    print(f"{'postgres added p50':24s} {p50:6.2f} ms (sqlite {added(sqlite.gateway_ms, sqlite.direct_ms, 0.5):.2f} ms)"
          f"  target <= 3.0 ({'ok' if p50 <= 3 else 'MISSED'})")
    p99 = added(shared.gateway_ms, shared.direct_ms, 0.99)
    print(f"{'postgres added p99':24s} {p99:6.2f} ms (sqlite {added(sqlite.gateway_ms, sqlite.direct_ms, 0.99):.2f} ms)")


if __name__ == "__main__":
    main()
