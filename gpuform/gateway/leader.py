"""Which gateway replica leads: the one that runs the reconciler, the autoscaler, the queue sweep and ledger
accrual. Every other replica (a follower) serves clients and workers only.

A SQLite gateway is alone: :class:`SoloLeadership` always leads, at a fixed epoch. A PostgreSQL gateway
competes for a session advisory lock (:class:`PostgresLeadership`) on a connection of its own; whoever holds
the lock leads. Each gain increments the store's epoch (the ``leadership`` row) and records who leads and
since when; a worker start is fenced by that epoch (:meth:`PostgresWorkers.insert_fenced
<gpuform.gateway.postgres.PostgresWorkers.insert_fenced>`), so a deposed leader never starts a worker.

The lock connection is checked every second; a check that fails or does not answer within
:data:`CHECK_TIMEOUT` is a loss, at once. Checks run on threads of their own (:data:`THREADS`), never on the
event loop's shared pool: there, provider calls to a lost host (each waiting out its SSH timeout) had queued a
healthy leader's check past that limit, and it stepped down for seconds while the lost host's jobs waited.
Short TCP keepalives on both ends make the server end a partitioned leader's session (and release its lock)
within a few seconds; a killed leader's socket closes at once, and a follower takes over at its next try
(within about a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("gpuform.leader")
TRY_EVERY = 1.0  # seconds between lock attempts (a follower) or session checks (the leader)
CHECK_TIMEOUT = 2.0  # a lock attempt or check that takes longer counts as a lost connection
THREADS = 4  # leadership's own threads: a hung call (abandoned) holds one until it ends; the next attempt takes another
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 2,
             "tcp_user_timeout": 3000}
SERVER_KEEPALIVE = ("SET tcp_keepalives_idle = 1", "SET tcp_keepalives_interval = 1",
                    "SET tcp_keepalives_count = 2", "SET tcp_user_timeout = 3000")
BUMP_EPOCH = ("UPDATE leadership SET epoch = epoch + 1, leader = %s, since = extract(epoch FROM now()) "
              "WHERE id = 1 RETURNING epoch")
Callback = Callable[[], None]


@dataclass(frozen=True)
class Leader:
    """Who leads, as the store records it (for status and the console)."""

    replica_id: str
    epoch: int
    since: float | None

    def to_json(self) -> dict[str, Any]:
        return {"replica_id": self.replica_id, "epoch": self.epoch, "since": self.since}


class Leadership(Protocol):
    """Whether this replica leads now, and since which epoch. ``run`` keeps trying until cancelled and calls
    ``on_gain`` when this replica becomes leader, ``on_loss`` when it stops being one (``leading`` is already
    false when ``on_loss`` runs)."""

    replica_id: str

    @property
    def leading(self) -> bool: ...

    @property
    def epoch(self) -> int: ...

    def status(self) -> dict[str, Any]: ...

    async def run(self, on_gain: Callback, on_loss: Callback) -> None: ...

    def close(self) -> None: ...


class SoloLeadership:
    """The only replica there is (SQLite): it always leads, at epoch 1."""

    def __init__(self, replica_id: str = "r0") -> None:
        self.replica_id = replica_id

    @property
    def leading(self) -> bool:
        return True

    @property
    def epoch(self) -> int:
        return 1

    def status(self) -> dict[str, Any]:
        return {"replica_id": self.replica_id, "leader": True, "epoch": 1, "mode": "solo"}

    async def run(self, on_gain: Callback, on_loss: Callback) -> None:
        on_gain()

    def close(self) -> None:
        return None


def lock_key(schema: str) -> int:
    """The advisory lock of ``schema``'s leadership (distinct from the migration lock)."""
    digest = hashlib.sha256(b"gpuform-gateway-leader\0" + schema.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _Session:
    """The lock connection; used from worker threads, one call at a time (a call that hangs is abandoned:
    the session is dropped and closed by whichever thread finishes with it)."""

    def __init__(self, url: str, schema: str, application: str) -> None:
        import psycopg  # here, not at import: a SQLite gateway never loads the driver
        from psycopg import sql
        from psycopg.conninfo import make_conninfo

        self.lock = threading.Lock()
        self.abandoned = False
        conninfo = make_conninfo(url, connect_timeout=int(CHECK_TIMEOUT) + 1, application_name=application,
                                 **KEEPALIVE)
        self.conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(conninfo, autocommit=True)
        for statement in SERVER_KEEPALIVE:
            with contextlib.suppress(psycopg.errors.UndefinedObject):  # tcp_user_timeout: PostgreSQL 12+
                self.conn.execute(statement)
        self.conn.execute("SELECT set_config('search_path', %s, false)",
                          (sql.Identifier(schema).as_string(self.conn),))

    def try_lock(self, key: int, replica_id: str) -> int | None:
        """The new epoch when the lock was free (now held), else None."""
        with self.lock:
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not row or not row[0]:
                return None
            bumped = self.conn.execute(BUMP_EPOCH, (replica_id,)).fetchone()
            if bumped is None:
                raise OSError("the leadership row is missing (the store was not migrated)")
            self._still_wanted()
            return int(bumped[0])

    def check(self) -> None:
        with self.lock:
            self.conn.execute("SELECT 1").fetchone()
            self._still_wanted()

    def _still_wanted(self) -> None:
        """A call that finished after its caller gave up closes the session (a lock taken late is released)."""
        if self.abandoned:
            self.close()
            raise OSError("the leadership session was abandoned")

    def abandon(self) -> None:
        """Close the session now, or, while a call is using it, when that call ends."""
        self.abandoned = True
        if self.lock.acquire(blocking=False):
            try:
                self.close()
            finally:
                self.lock.release()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class PostgresLeadership:
    """Leadership by a session advisory lock on a dedicated connection to the store's database."""

    def __init__(self, url: str, schema: str, replica_id: str, interval: float = TRY_EVERY) -> None:
        self.url, self.schema, self.replica_id, self.interval = url, schema, replica_id, interval
        self.key = lock_key(schema)
        self._session: _Session | None = None
        self._epoch = 0
        self._leading = False
        self.changes = 0  # how many gains and losses so far (status, tests)
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix=f"gpuform-leader-{replica_id}")

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def epoch(self) -> int:
        return self._epoch

    def status(self) -> dict[str, Any]:
        return {"replica_id": self.replica_id, "leader": self._leading, "epoch": self._epoch, "mode": "postgres"}

    async def run(self, on_gain: Callback, on_loss: Callback) -> None:
        try:
            while True:
                await self.step(on_gain, on_loss)
                await asyncio.sleep(self.interval)
        finally:
            self.step_down(on_loss, "the gateway is stopping")
            self.close()

    async def step(self, on_gain: Callback, on_loss: Callback) -> None:
        """One attempt (a follower) or check (the leader); a failure or a hang is a loss."""
        import psycopg

        try:  # not asyncio.wait_for: on 3.11 it swallows a cancel that comes as the call ends (the gateway's
            async with asyncio.timeout(CHECK_TIMEOUT):  # stop then waits for this loop forever)
                epoch = await asyncio.get_running_loop().run_in_executor(self._threads, self._attempt)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._drop()
            self.step_down(on_loss, f"lost its database session: {_text(exc)}")
            return
        if epoch is not None and not self._leading:
            self._epoch, self._leading = epoch, True
            self.changes += 1
            log.info("replica %s leads (epoch %d)", self.replica_id, epoch)
            on_gain()

    def step_down(self, on_loss: Callback, why: str) -> None:
        if self._leading:
            self._leading = False
            self.changes += 1
            log.warning("replica %s no longer leads (epoch %d): %s", self.replica_id, self._epoch, why)
            on_loss()

    def _attempt(self) -> int | None:
        session = self._session
        if session is None:
            session = self._session = _Session(self.url, self.schema, f"gpuform-leader-{self.replica_id}")
        try:
            if self._leading:
                session.check()
                return None
            return session.try_lock(self.key, self.replica_id)
        except BaseException:
            session.close()
            raise

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.abandon()

    def close(self) -> None:
        self._drop()
        self._threads.shutdown(wait=False)


def _text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:g}s"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def current_leader(row: dict[str, Any] | None) -> Leader | None:
    """The leadership row as :class:`Leader` (None before anyone led)."""
    if row is None or not row.get("leader"):
        return None
    since = row.get("since")
    return Leader(str(row["leader"]), int(row["epoch"]), float(since) if since is not None else None)
