"""Leadership of gateway replicas on the test PostgreSQL: one advisory lock, one leader; a leader whose
session dies is replaced within 5 s with a higher epoch, and a deposed leader's fenced worker insert fails."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from gpuform.errors import Fenced
from gpuform.gateway.leader import CHECK_TIMEOUT, PostgresLeadership, current_leader
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.workers import WorkerRecord
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
TAKEOVER = 5.0  # the bound: a new leader within 5 s of the old one dying


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    schema = fresh_schema()
    made = PostgresStore(postgres_url(), schema)
    yield made
    made.close()
    drop_schema(schema)


class Replica:
    """One leadership running as a task, with the gains and losses it reported."""

    def __init__(self, store: PostgresStore, name: str) -> None:
        self.leadership = PostgresLeadership(store.db.url, store.db.schema, name, interval=0.2)
        self.events: list[str] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.leadership.run(lambda: self.events.append("gain"), lambda: self.events.append("loss")))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def _until(predicate: object, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` holds (fails after ``timeout``)."""
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _terminate(store: PostgresStore, replica: str) -> int:
    """pg_terminate_backend on a replica's lock session (as a server restart or a partition would end it)."""
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (f"gpuform-leader-{replica}",)).fetchall()
    return len(rows)


def _record(worker_id: str) -> WorkerRecord:
    return WorkerRecord(id=worker_id, endpoint="ep", pool="gpu", revision="r", token_hash="h-" + worker_id,
                        requested_at=1000.0)


def test_one_leader_and_a_takeover_within_5s_when_its_session_is_terminated(store: PostgresStore) -> None:
    async def main() -> None:
        a, b = Replica(store, "a"), Replica(store, "b")
        a.start()
        await _until(lambda: a.leadership.leading, 3, "the first replica to lead")
        b.start()
        await asyncio.sleep(1.0)  # several of b's attempts
        assert (a.leadership.leading, b.leadership.leading) == (True, False)
        first = a.leadership.epoch
        leader = current_leader(store.leadership())
        assert leader is not None and (leader.replica_id, leader.epoch) == ("a", first)
        assert _terminate(store, "a") == 1
        took = await _until(lambda: b.leadership.leading, TAKEOVER, "the other replica to take over")
        print(f"takeover after pg_terminate_backend: {took:.2f}s")
        await _until(lambda: not a.leadership.leading, 3, "the old leader to notice")
        assert b.leadership.epoch == first + 1
        assert a.events == ["gain", "loss"] and b.events == ["gain"]
        leader = current_leader(store.leadership())
        assert leader is not None and (leader.replica_id, leader.epoch) == ("b", first + 1)
        await asyncio.sleep(1.0)
        assert not a.leadership.leading, "the lock is b's: a stays a follower"
        await asyncio.gather(a.stop(), b.stop())

    asyncio.run(main())


def test_a_leader_that_stops_hands_over_and_its_fenced_inserts_fail(store: PostgresStore) -> None:
    async def main() -> None:
        a, b = Replica(store, "a"), Replica(store, "b")
        a.start()
        await _until(lambda: a.leadership.leading, 3, "a to lead")
        b.start()
        old = a.leadership.epoch
        store.workers.insert_fenced(_record("w-before"), old)  # the leader's own insert goes through
        await a.stop()
        took = await _until(lambda: b.leadership.leading, TAKEOVER, "b to take over")
        print(f"takeover after the leader closed its session: {took:.2f}s")
        with pytest.raises(Fenced, match="no longer leads"):
            store.workers.insert_fenced(_record("w-deposed"), old)
        store.workers.insert_fenced(_record("w-new"), b.leadership.epoch)
        assert sorted(w.id for w in store.workers.current()) == ["w-before", "w-new"]
        await b.stop()

    asyncio.run(main())


def _port_of(leadership: PostgresLeadership) -> int:
    """The local TCP port of a leadership's lock session."""
    session = leadership._session
    assert session is not None
    sock = socket.socket(fileno=session.conn.pgconn.socket)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.detach()


def _partition(port: int, on: bool) -> None:
    """Drop every packet of one TCP connection to the test PostgreSQL (from local port ``port``), both ways, as
    a network partition does: nothing is closed, nothing answers (only this connection is touched)."""
    rules = [["-p", "tcp", "-i", "lo", "--sport", str(port), "--dport", "55432", "-j", "DROP"],
             ["-p", "tcp", "-i", "lo", "--sport", "55432", "--dport", str(port), "-j", "DROP"]]
    for rule in rules:
        subprocess.run(["iptables", "-I" if on else "-D", "INPUT", *rule], check=on, capture_output=True)


def test_a_partitioned_leader_steps_down_and_the_server_releases_its_lock_within_seconds(
        store: PostgresStore) -> None:
    usable = shutil.which("iptables") is not None and not subprocess.run(
        ["iptables", "-L", "INPUT", "-n"], check=False, capture_output=True).returncode
    if not usable:  # .ci/setup/packages.sh installs it, and CI runs as root
        assert not os.environ.get("CI"), "iptables (as root) is missing: .ci/setup/packages.sh installs it"
        pytest.skip("needs iptables (root) to drop one connection's packets")

    async def main() -> None:
        a, b = Replica(store, "a"), Replica(store, "b")
        a.start()
        await _until(lambda: a.leadership.leading, 3, "a to lead")
        b.start()
        port, old = _port_of(a.leadership), a.leadership.epoch
        _partition(port, True)
        try:
            stepped = await _until(lambda: not a.leadership.leading, 4, "the partitioned leader to step down")
            # a's next session goes over a new connection (not dropped): either replica may win the lock
            took = await _until(lambda: any(r.leadership.leading for r in (a, b)), 8,
                                "the server to end the partitioned session and release its lock")
            print(f"partition: the old leader stepped down after {stepped:.2f}s; a new leader {took:.2f}s later")
        finally:
            _partition(port, False)
        leaders = [r for r in (a, b) if r.leadership.leading]
        assert len(leaders) == 1 and leaders[0].leadership.epoch == old + 1
        await asyncio.gather(a.stop(), b.stop())

    asyncio.run(main())


def test_a_leader_keeps_leading_while_the_loops_shared_threads_are_all_blocked(store: PostgresStore) -> None:
    """Provider calls to a lost host hold the loop's shared threads for their SSH timeouts: the leadership's
    checks do not queue behind them (they did, and a healthy leader stepped down while the lost host's jobs
    waited for the sweep it runs)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        a = Replica(store, "a")
        a.start()
        await _until(lambda: a.leadership.leading, 3, "a to lead")
        release = threading.Event()
        shared = ThreadPoolExecutor(2)  # like the default pool of a small host, every thread taken
        loop.set_default_executor(shared)
        blocked = [loop.run_in_executor(None, release.wait, 30) for _ in range(4)]
        try:
            await asyncio.sleep(4 * CHECK_TIMEOUT)  # several checks, each longer than the limit had it queued
            assert a.leadership.leading and a.events == ["gain"], a.events
        finally:
            release.set()
            await asyncio.gather(*blocked)
        await a.stop()

    asyncio.run(main())
