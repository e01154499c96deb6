"""The embedded gateway store: one SQLite file in WAL mode, with versioned migrations.

A committed write survives the gateway being killed with -9 (WAL with ``synchronous=NORMAL`` loses
commits only on an operating-system crash or power loss). All access happens on the event loop's thread;
each call is a short transaction.

The schema version is SQLite's ``user_version``. A database made before versioning (user_version 0 with
tables in it) is version 1. :data:`MIGRATIONS` takes any older database to :data:`SCHEMA_VERSION` in place,
each step in one transaction; a database from a newer gpuform is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path
from typing import Any

from gpuform.errors import StoreError, StoreFull
from gpuform.gateway.jobs import Job
from gpuform.gateway.rows import (
    HISTORY_COLUMNS,
    JOB_COLUMNS,
    LEDGER_COLUMNS,
    OPEN_STATUSES,
    history_from_row,
    history_values,
    history_where,
    job_from_row,
    open_env,
    seal_env,
    worker_from_row,
)
from gpuform.gateway.states import LIVE, WorkerState
from gpuform.gateway.store import HistoryEntry, HistoryQuery, LedgerEntry, StoredEndpoint
from gpuform.gateway.workers import WorkerRecord
from gpuform.spec import EndpointSpec
from gpuform.util.sealing import is_sealed, seal

V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, secret_env TEXT NOT NULL, revision TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, status TEXT NOT NULL, input BLOB,
    output BLOB, error TEXT, webhook TEXT, sync INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, completed_at REAL,
    execution_timeout REAL NOT NULL, ttl REAL NOT NULL, low_priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0, worker_id TEXT,
    idempotency_key TEXT, expires_at REAL, client_key TEXT);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(endpoint, status) WHERE status IN ('IN_QUEUE', 'IN_PROGRESS');
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(endpoint, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_ttl ON jobs(created_at + ttl);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, pool TEXT NOT NULL, host TEXT, state TEXT NOT NULL,
    gpu_type TEXT, gpus INTEGER NOT NULL DEFAULT 0, price REAL, token_hash TEXT NOT NULL,
    spec_revision TEXT, requested_at REAL NOT NULL, started_at REAL, ready_at REAL, first_job_at REAL,
    stopped_at REAL, last_seen REAL, exit_reason TEXT, timeline TEXT);
CREATE TABLE IF NOT EXISTS ledger (
    worker_id TEXT NOT NULL, endpoint TEXT NOT NULL, day TEXT NOT NULL, gpu_type TEXT, gpus INTEGER NOT NULL,
    seconds REAL NOT NULL, cost REAL, PRIMARY KEY (worker_id, day));
"""


def _v1(conn: sqlite3.Connection) -> None:
    """The schema of gpuform 0.1.0, before versioning."""
    for statement in V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    """Drop what 0.1.0 created and never used: the ``chunks`` table and the ``jobs.client_key`` column."""
    conn.execute("DROP TABLE IF EXISTS chunks")
    conn.execute("ALTER TABLE jobs DROP COLUMN client_key")


def _v3(conn: sqlite3.Connection) -> None:
    """Jobs belong to the key that submitted them (``owner``); Idempotency-Keys are scoped per key; usage is
    counted per key."""
    conn.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
    conn.execute("DROP INDEX IF EXISTS jobs_idem")
    conn.execute("CREATE UNIQUE INDEX jobs_idem ON jobs(endpoint, COALESCE(owner, ''), idempotency_key) "
                 "WHERE idempotency_key IS NOT NULL")
    conn.execute("CREATE TABLE key_usage (owner TEXT NOT NULL, endpoint TEXT NOT NULL, day TEXT NOT NULL, "
                 "jobs INTEGER NOT NULL, failed INTEGER NOT NULL, execution_seconds REAL NOT NULL, "
                 "PRIMARY KEY (owner, endpoint, day))")


HISTORY_TABLE = ("CREATE TABLE requests (job_id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, owner TEXT, "
                 "status TEXT NOT NULL, worker_id TEXT, created_at REAL NOT NULL, started_at REAL, "
                 "completed_at REAL NOT NULL)")


def _v4(conn: sqlite3.Connection) -> None:
    """The request history: one compact row per finished request, kept apart from the jobs (whose results
    expire sooner) and pruned by its own retention."""
    conn.execute(HISTORY_TABLE)
    conn.execute("CREATE INDEX requests_arrival ON requests(endpoint, created_at)")
    conn.execute("CREATE INDEX requests_completed ON requests(completed_at)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; return the version it had."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0 and conn.execute("SELECT 1 FROM sqlite_master WHERE name='jobs'").fetchone():
        version = 1  # written by 0.1.0, which did not record a version
    if version > SCHEMA_VERSION:
        raise StoreError(f"the gateway database {where} has schema version {version}, newer than this gpuform "
                         f"knows ({SCHEMA_VERSION})",
                         "It was written by a newer gpuform: run that version (or newer), or restore a backup "
                         "made before the upgrade.")
    found = version
    for number in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found


class _Connection:
    """The SQLite connection, with its errors translated: a full disk is :class:`StoreFull`, anything else
    a :class:`StoreError` (the gateway answers 507 or 503 with Retry-After, and acknowledges nothing)."""

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self.raw = conn
        self.where = where

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        try:
            return self.raw.execute(sql, params)
        except sqlite3.Error as exc:
            raise _translated(exc, self.where) from exc

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        try:
            return self.raw.executemany(sql, params)
        except sqlite3.Error as exc:
            raise _translated(exc, self.where) from exc

    def close(self) -> None:
        self.raw.close()


def _translated(exc: sqlite3.Error, where: str) -> StoreError:
    if "full" in str(exc).lower():
        return StoreFull(f"the gateway's disk is full ({where}): {exc}", "Free disk space on the gateway's host.")
    return StoreError(f"the gateway database failed ({where}): {exc}", "Check the disk; retry shortly.")


class SQLiteStore:
    """:class:`gpuform.gateway.store.GatewayStore` on one SQLite file (or ``:memory:`` for tests).

    The file and its WAL are private to the gateway's user (0600, in a 0700 directory): they hold job
    inputs and outputs."""

    def __init__(self, path: Path | str, secrets_key: str | None = None) -> None:
        where = str(path)
        if where != ":memory:":
            _private_file(Path(where))
        try:
            raw = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
            raw.row_factory = sqlite3.Row
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute("PRAGMA busy_timeout=5000")
            self.migrated_from = migrate(raw, where)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the gateway database {where}: {exc}",
                             "Check the disk and the file's permissions; restore a backup if it is damaged.") from exc
        self.conn = _Connection(raw, where)
        self.jobs = SQLiteJobs(self.conn)
        self.workers = SQLiteWorkers(self.conn)
        self.ledger = SQLiteLedger(self.conn)
        self.history = SQLiteHistory(self.conn)
        self.endpoints = SQLiteEndpoints(self.conn, secrets_key or secrets.token_urlsafe(32), where)
        self.endpoints.seal_plain_rows()

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET "
                          "value=excluded.value", (key, value))

    def close(self) -> None:
        self.conn.close()


def _private_file(path: Path) -> None:
    """Create ``path`` (and its directory) readable by this user only, before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            os.chmod(extra, 0o600)


class _Tx:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def __enter__(self) -> _Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


class SQLiteJobs:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def insert(self, job: Job) -> int:
        text = json.dumps(job.input)
        self.conn.execute(
            f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (job.id, job.endpoint, job.status, text, None, None, job.webhook, int(job.sync),
             job.created_at, None, None, job.execution_timeout, job.ttl, int(job.low_priority), 0, job.retried,
             None, job.idempotency_key, None, job.owner))
        return len(text)

    def input_of(self, job_id: str) -> Any:
        row = self.conn.execute("SELECT input FROM jobs WHERE id=?", (job_id,)).fetchone()
        return json.loads(row["input"]) if row is not None and row["input"] else None

    def started(self, jobs: list[Job]) -> None:
        with _Tx(self.conn) as conn:
            conn.executemany("UPDATE jobs SET status=?, started_at=?, attempts=?, worker_id=? WHERE id=?",
                             [(j.status, j.started_at, j.attempts, j.worker_id, j.id) for j in jobs])

    def finished(self, job: Job) -> int:
        output, error = json.dumps(job.output), json.dumps(job.error)
        self.conn.execute("UPDATE jobs SET status=?, output=?, error=?, completed_at=?, expires_at=?, attempts=?, "
                          "worker_id=?, started_at=? WHERE id=?",
                          (job.status, output, error, job.completed_at, job.expires_at, job.attempts,
                           job.worker_id, job.started_at, job.id))
        return len(output) + len(error)

    def requeued(self, job: Job) -> None:
        self.conn.execute("UPDATE jobs SET status=?, output=NULL, error=NULL, started_at=NULL, completed_at=NULL, "
                          "expires_at=NULL, worker_id=NULL, attempts=?, retried=? WHERE id=?",
                          (job.status, job.attempts, job.retried, job.id))

    def delete(self, job_ids: list[str]) -> None:
        with _Tx(self.conn) as conn:
            conn.executemany("DELETE FROM jobs WHERE id=?", [(i,) for i in job_ids])

    def get(self, job_id: str) -> Job | None:
        row = self.conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    def by_idempotency(self, endpoint: str, owner: str | None, key: str) -> Job | None:
        row = self.conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE endpoint=? AND COALESCE(owner, '')=? "
                                "AND idempotency_key=?", (endpoint, owner or "", key)).fetchone()
        return None if row is None else job_from_row(row)

    def count_usage(self, owner: str, endpoint: str, day: str, failed: bool, execution_seconds: float) -> None:
        self.conn.execute(
            "INSERT INTO key_usage(owner, endpoint, day, jobs, failed, execution_seconds) VALUES (?,?,?,1,?,?) "
            "ON CONFLICT(owner, endpoint, day) DO UPDATE SET jobs=jobs+1, failed=failed+excluded.failed, "
            "execution_seconds=execution_seconds+excluded.execution_seconds",
            (owner, endpoint, day, int(failed), execution_seconds))

    def usage_by_key(self, days: int = 31) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT owner, endpoint, day, jobs, failed, execution_seconds FROM key_usage "
                                 "ORDER BY day DESC, owner, endpoint LIMIT ?", (days * 200,)).fetchall()
        return [dict(r) for r in rows]

    def open_jobs(self) -> list[Job]:
        rows = self.conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE status IN {OPEN_STATUSES} "
                                 "ORDER BY created_at").fetchall()
        return [job_from_row(r) for r in rows]

    def expired(self, now: float, limit: int) -> list[str]:
        rows = self.conn.execute("SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at < ? "
                                 "ORDER BY expires_at LIMIT ?", (now, limit)).fetchall()
        return [str(r["id"]) for r in rows]

    def ttl_expired(self, now: float, limit: int) -> list[str]:
        rows = self.conn.execute(f"SELECT id FROM jobs WHERE created_at + ttl < ? AND status IN {OPEN_STATUSES} "
                                 "LIMIT ?", (now, limit)).fetchall()
        return [str(r["id"]) for r in rows]

    def counts(self, endpoint: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) AS n, SUM(retried) AS r FROM jobs WHERE endpoint=? "
                                 "GROUP BY status", (endpoint,)).fetchall()
        out = {str(r["status"]): int(r["n"]) for r in rows}
        out["_retried"] = sum(int(r["r"] or 0) for r in rows)
        return out


class SQLiteWorkers:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def save(self, w: WorkerRecord) -> None:
        self.conn.execute(
            "INSERT INTO workers(id, endpoint, pool, host, state, gpu_type, gpus, price, token_hash, spec_revision, "
            "requested_at, started_at, ready_at, first_job_at, stopped_at, last_seen, exit_reason, timeline) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET host=excluded.host, "
            "state=excluded.state, gpu_type=excluded.gpu_type, gpus=excluded.gpus, price=excluded.price, "
            "ready_at=excluded.ready_at, first_job_at=excluded.first_job_at, stopped_at=excluded.stopped_at, "
            "last_seen=excluded.last_seen, exit_reason=excluded.exit_reason, timeline=excluded.timeline",
            (w.id, w.endpoint, w.pool, w.host, w.state, w.gpu_type, w.gpus, w.price, w.token_hash, w.revision,
             w.requested_at, w.requested_at, w.ready_at, w.first_job_at, w.stopped_at, w.last_seen, w.exit_reason,
             json.dumps(w.timeline)))

    def live(self) -> list[WorkerRecord]:
        states = (*sorted(LIVE), WorkerState.STOPPING, WorkerState.SLEEPING)
        rows = self.conn.execute(f"SELECT * FROM workers WHERE state IN ({','.join('?' * len(states))})",
                                 states).fetchall()
        return [worker_from_row(r) for r in rows]

    def recent(self, endpoint: str | None, limit: int = 50) -> list[dict[str, Any]]:
        sql = "SELECT * FROM workers" + (" WHERE endpoint=?" if endpoint else "") + \
              " ORDER BY requested_at DESC LIMIT ?"
        params: tuple[Any, ...] = (endpoint, limit) if endpoint else (limit,)
        return [dict(r) for r in self.conn.execute(sql, params).fetchall()]


class SQLiteLedger:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def add(self, e: LedgerEntry) -> None:
        self.conn.execute(
            "INSERT INTO ledger(worker_id, endpoint, day, gpu_type, gpus, seconds, cost) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(worker_id, day) DO UPDATE SET seconds=seconds+excluded.seconds, "
            "cost=CASE WHEN cost IS NULL OR excluded.cost IS NULL THEN NULL ELSE cost+excluded.cost END",
            (e.worker_id, e.endpoint, e.day, e.gpu_type, e.gpus, e.seconds, e.cost))

    def spent(self, endpoint: str, day: str) -> float:
        row = self.conn.execute("SELECT COALESCE(SUM(cost), 0) AS c FROM ledger WHERE endpoint=? AND day=?",
                                (endpoint, day)).fetchone()
        return float(row["c"])

    def usage(self, days: int = 31) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT endpoint, day, gpu_type, SUM(gpus * seconds) AS gpu_seconds, SUM(seconds) AS worker_seconds, "
            "COUNT(*) AS workers, SUM(cost) AS cost, SUM(cost IS NULL) AS unpriced FROM ledger "
            "GROUP BY endpoint, day, gpu_type ORDER BY day DESC, endpoint LIMIT ?", (days * 50,)).fetchall()
        return [{"endpoint": r["endpoint"], "day": r["day"], "gpu_type": r["gpu_type"],
                 "gpu_seconds": r["gpu_seconds"], "worker_seconds": r["worker_seconds"], "workers": r["workers"],
                 "cost": None if r["unpriced"] else r["cost"]} for r in rows]

    def worker_seconds(self, worker_id: str) -> float:
        row = self.conn.execute("SELECT COALESCE(SUM(seconds), 0) AS s FROM ledger WHERE worker_id=?",
                                (worker_id,)).fetchone()
        return float(row["s"])

    def entries(self) -> list[LedgerEntry]:
        rows = self.conn.execute(f"SELECT {LEDGER_COLUMNS} FROM ledger ORDER BY day, worker_id").fetchall()
        return [LedgerEntry(*tuple(r)) for r in rows]

    def restore(self, entries: list[LedgerEntry]) -> int:
        before = self.conn.raw.total_changes
        self.conn.executemany(f"INSERT INTO ledger({LEDGER_COLUMNS}) VALUES (?,?,?,?,?,?,?) "
                              "ON CONFLICT(worker_id, day) DO NOTHING", [astuple(e) for e in entries])
        return int(self.conn.raw.total_changes - before)


class SQLiteHistory:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def add(self, entry: HistoryEntry) -> None:
        self.conn.execute(f"INSERT OR REPLACE INTO requests ({HISTORY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                          history_values(entry))

    def query(self, query: HistoryQuery) -> list[HistoryEntry]:
        where, params = history_where(query, "?")
        rows = self.conn.execute(f"SELECT {HISTORY_COLUMNS} FROM requests WHERE {where} "
                                 "ORDER BY created_at DESC, job_id LIMIT ?", (*params, query.limit)).fetchall()
        return [history_from_row(r) for r in rows]

    def prune(self, before: float, limit: int) -> int:
        cursor = self.conn.execute("DELETE FROM requests WHERE job_id IN (SELECT job_id FROM requests "
                                   "WHERE completed_at < ? ORDER BY completed_at LIMIT ?)", (before, limit))
        return int(cursor.rowcount)


class SQLiteEndpoints:
    """Endpoint specs, and their secret environment sealed (AES-GCM) under a key the database does not hold
    (the gateway's 0600 configuration carries it)."""

    def __init__(self, conn: _Connection, key: str, where: str) -> None:
        self.conn = conn
        self.key = key
        self.where = where

    def put(self, name: str, endpoint: StoredEndpoint) -> None:
        sealed = seal_env(self.key, name, endpoint.secret_env)
        self.conn.execute(
            "INSERT INTO endpoints(name, spec, secret_env, revision, updated_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, secret_env=excluded.secret_env, "
            "revision=excluded.revision, updated_at=excluded.updated_at",
            (name, endpoint.spec.model_dump_json(), sealed, endpoint.revision, time.time()))

    def all(self) -> dict[str, StoredEndpoint]:
        rows = self.conn.execute("SELECT name, spec, secret_env, revision FROM endpoints").fetchall()
        return {r["name"]: StoredEndpoint(EndpointSpec.model_validate_json(r["spec"]),
                                          self._open(r["name"], r["secret_env"]), r["revision"]) for r in rows}

    def _open(self, name: str, value: str) -> dict[str, str]:
        return open_env(self.key, name, value, self.where)

    def seal_plain_rows(self) -> None:
        """Seal what gpuform 0.1.0 stored in plain text."""
        for row in self.conn.execute("SELECT name, secret_env FROM endpoints").fetchall():
            if not is_sealed(row["secret_env"]):
                sealed = seal(self.key, row["secret_env"].encode(), row["name"])
                self.conn.execute("UPDATE endpoints SET secret_env=? WHERE name=?", (sealed, row["name"]))

    def delete(self, name: str) -> None:
        self.conn.execute("DELETE FROM endpoints WHERE name=?", (name,))
