"""The queue alone, in one run: JobQueue on SQLite (one gateway) against SharedJobQueue on PostgreSQL (replicas),
the latter with clients and workers on the same replica and on two replicas (wake-ups by NOTIFY).

One round trip is: a client submits and waits for the result (runsync's wait_done), a worker's long-poll takes
the job and posts its result. Reported: p50/p99 of sequential round trips, and jobs per second with
``--clients`` concurrent clients and ``--workers`` workers, and each Postgres figure as a ratio of SQLite's.
Needs the tests' PostgreSQL (.ci/setup/postgres.sh) or ``--url``.

Usage: python bench/shared_queue.py [--jobs 400] [--clients 16] [--workers 4] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuform.config.schema import GatewayTimings
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.queue import JobQueue
from gpuform.gateway.shared_queue import SharedJobQueue
from gpuform.gateway.sqlite import SQLiteStore

INFO = Path("/var/lib/gpuform-test/postgres.json")
Pair = tuple[JobQueue, JobQueue]  # (where clients submit, where workers take)


async def worker(queue: JobQueue, name: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for job in await queue.take("ep", name, 1, timeout=0.5):
            queue.result(job.id, name, {"output": job.input})


async def client(queue: JobQueue, n: int, latencies: list[float]) -> None:
    for _ in range(n):
        started = time.perf_counter()
        job, _ = queue.submit("ep", {"x": 1}, sync=True, execution_timeout=60, ttl=600)
        assert await queue.wait_done(job, 30), "a job did not finish"
        latencies.append(time.perf_counter() - started)


async def measure(pair: Pair, jobs: int, clients: int, workers: int) -> dict[str, float]:
    submit_on, take_on = pair
    stop = asyncio.Event()
    serving = [asyncio.create_task(worker(take_on, f"w{i}", stop)) for i in range(workers)]
    await client(submit_on, 20, [])  # warm up
    sequential: list[float] = []
    await client(submit_on, jobs // 2, sequential)
    concurrent: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(client(submit_on, jobs // clients, concurrent) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*serving)
    ordered = sorted(sequential)
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
            "jobs_per_s": len(concurrent) / elapsed}


async def sqlite_pair(directory: Path) -> Pair:
    queue = JobQueue(SQLiteStore(directory / "gateway.db").jobs, GatewayTimings())
    queue.loop = asyncio.get_running_loop()
    return queue, queue


async def postgres_pair(url: str, schema: str, replicas: int) -> Pair:
    made: list[SharedJobQueue] = []
    for _ in range(replicas):
        queue = SharedJobQueue(PostgresStore(url, schema), GatewayTimings())
        queue.restore()
        assert queue.listener is not None and await asyncio.to_thread(queue.listener.listening.wait, 5)
        made.append(queue)
    return made[0], made[-1]


async def run(args: argparse.Namespace, url: str) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    cases: list[tuple[str, Callable[[], Awaitable[Pair]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        schemas = [f"bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
        cases = [("sqlite JobQueue", lambda: sqlite_pair(Path(tmp))),
                 ("postgres SharedJobQueue, 1 replica", lambda: postgres_pair(url, schemas[0], 1)),
                 ("postgres SharedJobQueue, 2 replicas", lambda: postgres_pair(url, schemas[1], 2))]
        try:
            for name, make in cases:
                pair = await make()
                results[name] = await measure(pair, args.jobs, args.clients, args.workers)
                for queue in set(pair):
                    queue.dispose()
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    url = args.url or (json.loads(INFO.read_text())["url"] if INFO.exists() else None)
    if not url:
        sys.exit("no PostgreSQL: run .ci/setup/postgres.sh or pass --url")
    results = asyncio.run(run(args, url))
    base = results["sqlite JobQueue"]
    print(f"{'queue':38} {'p50 ms':>8} {'p99 ms':>8} {'jobs/s':>8}   vs sqlite (p50, jobs/s)")
    for name, r in results.items():
        print(f"{name:38} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['jobs_per_s']:8.0f}   "
              f"x{r['p50_ms'] / base['p50_ms']:.2f}, x{r['jobs_per_s'] / base['jobs_per_s']:.2f}")


if __name__ == "__main__":
    main()
