"""The gateway store on PostgreSQL (13 or later; tested on 15): the protocols of :mod:`gpuform.gateway.store`,
for a gateway whose jobs, workers, ledger and endpoints must live apart from its host.

Tables live in a schema of their own (``store.schema_name``, default :func:`default_schema`), created on first
use. Migrations are versioned (``schema_migrations``: one row per step applied), all pending steps run in one
transaction under an advisory lock (two gateways starting at once do not race), and a schema written by a
newer gpuform is refused.

One connection, in autocommit mode: every method is one statement, or one transaction, committed when it
returns. The gateway calls its store from the event loop's thread (as with SQLite); a lock makes the
connection safe from any other thread as well. A failed call raises :class:`~gpuform.errors.StoreError`
(the gateway answers 503 with Retry-After and acknowledges nothing); a broken connection is opened again by
the next call. The URL holds a password: no message carries it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from gpuform.errors import Fenced, StoreError, StoreFull
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

T = TypeVar("T")
Conn = psycopg.Connection[DictRow]
CONNECT_TIMEOUT = 5
RECONNECT_PAUSE = 1.0  # after a failed connect, calls fail at once for this long (the event loop never waits on
                       # an unreachable database more than once a second)
_HINT = "Check that PostgreSQL is up and reachable from the gateway's host, and the store's URL; retry shortly."

V1 = (
    "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE endpoints (name text PRIMARY KEY, spec text NOT NULL, secret_env text NOT NULL, "
    "revision text NOT NULL, updated_at double precision NOT NULL)",
    "CREATE TABLE jobs (id text PRIMARY KEY, endpoint text NOT NULL, status text NOT NULL, input text, output text, "
    "error text, webhook text, sync boolean NOT NULL DEFAULT false, created_at double precision NOT NULL, "
    "started_at double precision, completed_at double precision, execution_timeout double precision NOT NULL, "
    "ttl double precision NOT NULL, low_priority boolean NOT NULL DEFAULT false, attempts integer NOT NULL "
    "DEFAULT 0, retried integer NOT NULL DEFAULT 0, worker_id text, idempotency_key text, "
    "expires_at double precision, owner text)",
    "CREATE INDEX jobs_open ON jobs (endpoint, status) WHERE status IN ('IN_QUEUE', 'IN_PROGRESS')",
    "CREATE UNIQUE INDEX jobs_idem ON jobs (endpoint, COALESCE(owner, ''), idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL",
    "CREATE INDEX jobs_ttl ON jobs ((created_at + ttl))",
    "CREATE TABLE key_usage (owner text NOT NULL, endpoint text NOT NULL, day text NOT NULL, jobs bigint NOT NULL, "
    "failed bigint NOT NULL, execution_seconds double precision NOT NULL, PRIMARY KEY (owner, endpoint, day))",
    "CREATE TABLE workers (id text PRIMARY KEY, endpoint text NOT NULL, pool text NOT NULL, host text, "
    "state text NOT NULL, gpu_type text, gpus integer NOT NULL DEFAULT 0, price double precision, "
    "token_hash text NOT NULL, spec_revision text, requested_at double precision NOT NULL, "
    "started_at double precision, ready_at double precision, first_job_at double precision, "
    "stopped_at double precision, last_seen double precision, exit_reason text, timeline text)",
    "CREATE TABLE ledger (worker_id text NOT NULL, endpoint text NOT NULL, day text NOT NULL, gpu_type text, "
    "gpus integer NOT NULL, seconds double precision NOT NULL, cost double precision, PRIMARY KEY (worker_id, day))",
)


def _v1(conn: Conn) -> None:
    """Jobs, key usage, workers, the ledger, endpoints and metadata: SQLite's schema version 3."""
    for statement in V1:
        conn.execute(statement)


def _v2(conn: Conn) -> None:
    """The request history (SQLite's schema version 4): one compact row per finished request."""
    conn.execute("CREATE TABLE requests (job_id text PRIMARY KEY, endpoint text NOT NULL, owner text, "
                 "status text NOT NULL, worker_id text, created_at double precision NOT NULL, "
                 "started_at double precision, completed_at double precision NOT NULL)")
    conn.execute("CREATE INDEX requests_arrival ON requests (endpoint, created_at)")
    conn.execute("CREATE INDEX requests_completed ON requests (completed_at)")


V_QUEUE = (
    # the shared queue (gpuform/gateway/pgqueue.py): queue order, leases, progress, streams, worker signals
    "CREATE SEQUENCE job_order",
    "ALTER TABLE jobs ADD COLUMN queue_pos bigint NOT NULL DEFAULT nextval('job_order'), "
    "ADD COLUMN lease_until double precision, ADD COLUMN progress text, "
    "ADD COLUMN chunk_count integer NOT NULL DEFAULT 0, ADD COLUMN chunk_bytes bigint NOT NULL DEFAULT 0, "
    "ADD COLUMN drained integer NOT NULL DEFAULT 0, ADD COLUMN chunks_dropped integer NOT NULL DEFAULT 0",
    "UPDATE jobs SET queue_pos = o.n FROM (SELECT id AS oid, row_number() OVER (ORDER BY created_at) AS n FROM jobs "
    "WHERE status = 'IN_QUEUE') AS o WHERE id = o.oid",  # jobs queued before the upgrade keep their order
    "SELECT setval('job_order', GREATEST((SELECT max(queue_pos) FROM jobs), 1))",
    "CREATE INDEX jobs_queued ON jobs (endpoint, queue_pos) WHERE status = 'IN_QUEUE'",
    "CREATE INDEX jobs_held ON jobs (worker_id) WHERE status = 'IN_PROGRESS'",
    "CREATE INDEX jobs_streams ON jobs (chunk_bytes) WHERE chunk_bytes > 0 AND status = 'IN_PROGRESS'",
    "CREATE TABLE job_chunks (job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE, seq integer NOT NULL, "
    "output text NOT NULL, PRIMARY KEY (job_id, seq))",
    "CREATE TABLE worker_signals (id bigserial PRIMARY KEY, worker_id text NOT NULL, job_id text, control text, "
    "created_at double precision NOT NULL)",
    "CREATE INDEX worker_signals_of ON worker_signals (worker_id)",
    "CREATE TABLE queue_endpoints (endpoint text PRIMARY KEY, woke_at double precision NOT NULL DEFAULT 0)",
)


def _v_queue(conn: Conn) -> None:
    """The shared queue: a job's place in its queue, its lease, progress and stream chunks, and worker signals
    (stops and sleep/wake controls) that reach a worker on whichever replica it polls."""
    for statement in V_QUEUE:
        conn.execute(statement)


V_LEADER = (
    "CREATE TABLE leadership (id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL, leader text, "
    "since double precision)",
    "INSERT INTO leadership (id, epoch) VALUES (1, 0)",
    "ALTER TABLE workers ADD COLUMN idle_since double precision, ADD COLUMN billed_until double precision",
    "CREATE INDEX workers_token ON workers (token_hash)",
    # (jobs (worker_id) WHERE status = 'IN_PROGRESS' is the queue's step's jobs_held)
    "CREATE INDEX jobs_worker_done ON jobs (worker_id, completed_at) WHERE completed_at IS NOT NULL",
    "ALTER TABLE endpoints ADD COLUMN deleting boolean NOT NULL DEFAULT false",
)


def _v_leader(conn: Conn) -> None:
    """Gateway replicas: the leader's epoch (every worker start is fenced by it, gpuform/gateway/leader.py), what
    a worker row needs for any replica to carry on from it (since when it idles, up to when it is billed), and
    the indexes that tell whether a worker runs a job and when its last one ended, whichever replica served it;
    and which endpoints a replica is removing (every replica stops taking work for them)."""
    for statement in V_LEADER:
        conn.execute(statement)


MIGRATIONS: list[Callable[[Conn], None]] = [_v1, _v2, _v_queue, _v_leader]
SCHEMA_VERSION = len(MIGRATIONS)


def default_schema(gateway: str) -> str:
    """``gpuform_gateway_NAME`` (``-`` written ``_``; at most 63 characters, PostgreSQL's limit)."""
    return ("gpuform_gateway_" + gateway.replace("-", "_"))[:63]


def describe(url: str, schema: str) -> str:
    """Where the store is, for messages: host, port, database and schema (never the user or password)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        raise StoreError("the gateway's postgres store URL is not a PostgreSQL URL or connection string",
                         "Write it as postgresql://USER:PASSWORD@HOST:5432/DATABASE.") from None
    host = parts.get("host") or "localhost"
    return f"postgres {host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''} schema {schema}"


def _lock_id(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(b"gpuform-gateway-store\0" + schema.encode()).digest()[:8], "big",
                          signed=True)


def migrate(conn: Conn, schema: str, where: str) -> int:
    """Bring ``schema`` to :data:`SCHEMA_VERSION` (creating it); return the version it had."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(schema),))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        found = _version(conn)
        if found > SCHEMA_VERSION:
            raise StoreError(f"the gateway database {where} has schema version {found}, newer than this gpuform "
                             f"knows ({SCHEMA_VERSION})",
                             "It was written by a newer gpuform: run that version (or newer), or restore a backup "
                             "made before the upgrade.")
        for number in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[number - 1](conn)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
    return found


def _version(conn: Conn) -> int:
    row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetchone()
    return int(row["v"]) if row else 0


class Database:
    """The store's one connection: opened on first use and after a failure, its errors translated."""

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self.where = describe(url, schema)
        self._password = str(conninfo_to_dict(url).get("password") or "")
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._refused: tuple[float, StoreError] | None = None  # the last failed connect: when, and why

    def run(self, work: Callable[[Conn], T]) -> T:
        """``work`` on the connection, under the lock; StoreError when the database fails."""
        with self._lock:
            conn = self._connected()
            try:
                return work(conn)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    conn.close()
                    self._conn = None
                raise self._failed(exc) from exc

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[DictRow]:
        return self.run(lambda c: c.execute(query, params).fetchall())

    def row(self, query: str, params: Sequence[Any] = ()) -> DictRow | None:
        return self.run(lambda c: c.execute(query, params).fetchone())

    def execute(self, query: str, params: Sequence[Any] = ()) -> None:
        self.run(lambda c: c.execute(query, params))

    def many(self, query: str, params: list[Sequence[Any]]) -> None:
        """One statement for each item of ``params``, all in one transaction."""
        def work(conn: Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(query, params)
        self.run(work)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connected(self) -> Conn:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._refused is not None and time.monotonic() - self._refused[0] < RECONNECT_PAUSE:
            raise self._refused[1]
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   row_factory=dict_row, application_name="gpuform-gateway")
            conn.execute("SELECT set_config('search_path', %s, false)", (sql.Identifier(self.schema).as_string(conn),))
        except psycopg.Error as exc:
            error = StoreError(f"cannot connect to the gateway database ({self.where}): {self._text(exc)}", _HINT)
            self._refused = (time.monotonic(), error)
            raise error from exc
        self._conn, self._refused = conn, None
        return conn

    def _failed(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, psycopg.errors.DiskFull):
            return StoreFull(f"the gateway database's disk is full ({self.where}): {self._text(exc)}",
                             "Free disk space on the PostgreSQL server.")
        return StoreError(f"the gateway database failed ({self.where}): {self._text(exc)}", _HINT)

    def _text(self, exc: psycopg.Error) -> str:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return text.replace(self._password, "…") if self._password else text


class PostgresStore:
    """:class:`gpuform.gateway.store.GatewayStore` in one PostgreSQL schema."""

    def __init__(self, url: str, schema_name: str, secrets_key: str | None = None) -> None:
        self.db = Database(url, schema_name)
        try:
            self.migrated_from = self.db.run(lambda c: migrate(c, schema_name, self.db.where))
        except BaseException:
            self.db.close()
            raise
        self.jobs = PostgresJobs(self.db)
        self.workers = PostgresWorkers(self.db)
        self.ledger = PostgresLedger(self.db)
        self.history = PostgresHistory(self.db)
        self.endpoints = PostgresEndpoints(self.db, secrets_key or secrets.token_urlsafe(32))

    def schema_version(self) -> int:
        return self.db.run(_version)

    def leadership(self) -> dict[str, Any] | None:
        """The leadership row: the current epoch, who leads and since when (epoch seconds)."""
        row = self.db.row("SELECT epoch, leader, since FROM leadership WHERE id = 1")
        return None if row is None else dict(row)

    def get_meta(self, key: str) -> str | None:
        row = self.db.row("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
                        "value = excluded.value", (key, value))

    def close(self) -> None:
        self.db.close()


class PostgresJobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, job: Job) -> int:
        text = json.dumps(job.input)
        self.db.execute(
            f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join(['%s'] * 20)})",
            (job.id, job.endpoint, job.status, text, None, None, job.webhook, job.sync, job.created_at, None, None,
             job.execution_timeout, job.ttl, job.low_priority, 0, job.retried, None, job.idempotency_key, None,
             job.owner))
        return len(text)

    def input_of(self, job_id: str) -> Any:
        row = self.db.row("SELECT input FROM jobs WHERE id = %s", (job_id,))
        return json.loads(row["input"]) if row is not None and row["input"] else None

    def started(self, jobs: list[Job]) -> None:
        self.db.many("UPDATE jobs SET status = %s, started_at = %s, attempts = %s, worker_id = %s WHERE id = %s",
                     [(j.status, j.started_at, j.attempts, j.worker_id, j.id) for j in jobs])

    def finished(self, job: Job) -> int:
        output, error = json.dumps(job.output), json.dumps(job.error)
        self.db.execute("UPDATE jobs SET status = %s, output = %s, error = %s, completed_at = %s, expires_at = %s, "
                        "attempts = %s, worker_id = %s, started_at = %s WHERE id = %s",
                        (job.status, output, error, job.completed_at, job.expires_at, job.attempts, job.worker_id,
                         job.started_at, job.id))
        return len(output) + len(error)

    def requeued(self, job: Job) -> None:
        self.db.execute("UPDATE jobs SET status = %s, output = NULL, error = NULL, started_at = NULL, "
                        "completed_at = NULL, expires_at = NULL, worker_id = NULL, attempts = %s, retried = %s "
                        "WHERE id = %s", (job.status, job.attempts, job.retried, job.id))

    def delete(self, job_ids: list[str]) -> None:
        self.db.execute("DELETE FROM jobs WHERE id = ANY(%s)", (job_ids,))

    def get(self, job_id: str) -> Job | None:
        row = self.db.row(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        return None if row is None else job_from_row(row)

    def by_idempotency(self, endpoint: str, owner: str | None, key: str) -> Job | None:
        row = self.db.row(f"SELECT {JOB_COLUMNS} FROM jobs WHERE endpoint = %s AND COALESCE(owner, '') = %s "
                          "AND idempotency_key = %s", (endpoint, owner or "", key))
        return None if row is None else job_from_row(row)

    def count_usage(self, owner: str, endpoint: str, day: str, failed: bool, execution_seconds: float) -> None:
        self.db.execute(
            "INSERT INTO key_usage (owner, endpoint, day, jobs, failed, execution_seconds) VALUES (%s, %s, %s, 1, "
            "%s, %s) ON CONFLICT (owner, endpoint, day) DO UPDATE SET jobs = key_usage.jobs + 1, "
            "failed = key_usage.failed + excluded.failed, "
            "execution_seconds = key_usage.execution_seconds + excluded.execution_seconds",
            (owner, endpoint, day, int(failed), execution_seconds))

    def usage_by_key(self, days: int = 31) -> list[dict[str, Any]]:
        return self.db.rows("SELECT owner, endpoint, day, jobs, failed, execution_seconds FROM key_usage "
                            "ORDER BY day DESC, owner, endpoint LIMIT %s", (days * 200,))

    def open_jobs(self) -> list[Job]:
        rows = self.db.rows(f"SELECT {JOB_COLUMNS} FROM jobs WHERE status IN {OPEN_STATUSES} ORDER BY created_at")
        return [job_from_row(r) for r in rows]

    def expired(self, now: float, limit: int) -> list[str]:
        rows = self.db.rows("SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at < %s "
                            "ORDER BY expires_at LIMIT %s", (now, limit))
        return [str(r["id"]) for r in rows]

    def ttl_expired(self, now: float, limit: int) -> list[str]:
        rows = self.db.rows(f"SELECT id FROM jobs WHERE created_at + ttl < %s AND status IN {OPEN_STATUSES} LIMIT %s",
                            (now, limit))
        return [str(r["id"]) for r in rows]

    def counts(self, endpoint: str) -> dict[str, int]:
        rows = self.db.rows("SELECT status, COUNT(*) AS n, SUM(retried) AS r FROM jobs WHERE endpoint = %s "
                            "GROUP BY status", (endpoint,))
        out = {str(r["status"]): int(r["n"]) for r in rows}
        out["_retried"] = sum(int(r["r"] or 0) for r in rows)
        return out


WORKER_COLUMNS = ("id, endpoint, pool, host, state, gpu_type, gpus, price, token_hash, spec_revision, requested_at, "
                  "started_at, ready_at, first_job_at, stopped_at, last_seen, exit_reason, timeline, idle_since")
# Any replica may write a worker's row (the leader starts, sleeps and stops it; every replica records its contacts
# and jobs), each from its own copy: a write never takes a stopped worker back, never clears what another
# replica recorded first (ready, first job, stop), and keeps the latest contact.
WORKER_UPSERT = (
    f"INSERT INTO workers ({WORKER_COLUMNS}) VALUES ({', '.join(['%s'] * 19)}) ON CONFLICT (id) DO UPDATE SET "
    "host = COALESCE(NULLIF(excluded.host, ''), workers.host), "
    "state = CASE WHEN workers.state IN ('stopped', 'unhealthy') OR (workers.state = 'stopping' AND "
    "excluded.state NOT IN ('stopped', 'unhealthy')) THEN workers.state ELSE excluded.state END, "
    "idle_since = excluded.idle_since, "
    "gpu_type = COALESCE(NULLIF(excluded.gpu_type, ''), workers.gpu_type), "
    "gpus = GREATEST(excluded.gpus, workers.gpus), price = COALESCE(excluded.price, workers.price), "
    "ready_at = COALESCE(workers.ready_at, excluded.ready_at), "
    "first_job_at = COALESCE(workers.first_job_at, excluded.first_job_at), "
    "stopped_at = COALESCE(workers.stopped_at, excluded.stopped_at), "
    "last_seen = GREATEST(workers.last_seen, excluded.last_seen), "
    "exit_reason = COALESCE(NULLIF(excluded.exit_reason, ''), workers.exit_reason), "
    "timeline = (COALESCE(workers.timeline, '{}')::jsonb || COALESCE(excluded.timeline, '{}')::jsonb)::text")
FENCE = "SELECT epoch FROM leadership WHERE id = 1 FOR UPDATE"
LIVE_STATES = [str(s) for s in (*sorted(LIVE), WorkerState.STOPPING, WorkerState.SLEEPING)]
WORKERS_WITH_JOBS = (  # each worker row, with whether it runs a job now and when its last job ended
    "SELECT w.*, EXISTS (SELECT 1 FROM jobs WHERE worker_id = w.id AND status = 'IN_PROGRESS') AS busy, "
    "(SELECT max(completed_at) FROM jobs WHERE worker_id = w.id AND completed_at IS NOT NULL) AS last_done "
    "FROM workers w WHERE w.state = ANY(%s)")


def _worker_values(w: WorkerRecord) -> tuple[Any, ...]:
    return (w.id, w.endpoint, w.pool, w.host, w.state, w.gpu_type, w.gpus, w.price, w.token_hash, w.revision,
            w.requested_at, w.requested_at, w.ready_at, w.first_job_at, w.stopped_at, w.last_seen, w.exit_reason,
            json.dumps(w.timeline), w.idle_since)


def shared_worker(r: DictRow) -> WorkerRecord:
    """A worker row (of :data:`WORKERS_WITH_JOBS`) as the replicas share it: a ready worker runs while a job is in
    progress on it and idles since its last job ended (the jobs say so, whichever replica served them); billed
    up to what its row records."""
    w = worker_from_row(r)
    w.state = WorkerState(r["state"])
    w.billed_until = r["billed_until"]
    if w.state in (WorkerState.IDLE, WorkerState.RUNNING):
        w.state = WorkerState.RUNNING if r["busy"] else WorkerState.IDLE
        marks = [t for t in (r["idle_since"], r["last_done"], r["ready_at"]) if t is not None]
        w.idle_since = None if r["busy"] else max(marks, default=w.requested_at)
    return w


class PostgresWorkers:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, w: WorkerRecord) -> None:
        self.db.execute(WORKER_UPSERT, _worker_values(w))

    def insert_fenced(self, w: WorkerRecord, epoch: int) -> None:
        """Insert a new worker's row if ``epoch`` is still the leader's (the epoch row locked meanwhile, so a
        takeover waits for this insert and then sees it); raises :class:`~gpuform.errors.Fenced` otherwise."""
        def work(conn: Conn) -> None:
            with conn.transaction():
                row = conn.execute(FENCE).fetchone()
                current = int(row["epoch"]) if row else -1
                if current != epoch:
                    raise Fenced(f"this gateway replica no longer leads (its epoch {epoch}, the store's {current}): "
                                 f"worker {w.id} was not started",
                                 "Nothing to do: the replica that leads now starts the workers.")
                conn.execute(WORKER_UPSERT, _worker_values(w))
        self.db.run(work)

    def live(self) -> list[WorkerRecord]:
        rows = self.db.rows("SELECT * FROM workers WHERE state = ANY(%s)", (LIVE_STATES,))
        adopted = [worker_from_row(r) for r in rows]
        for w, r in zip(adopted, rows, strict=True):  # billing carries on from what was recorded
            w.billed_until = r["billed_until"] if r["billed_until"] is not None else w.billed_until
        return adopted

    def current(self) -> list[WorkerRecord]:
        """Every live worker as recorded now (:func:`shared_worker`)."""
        return [shared_worker(r) for r in self.db.rows(WORKERS_WITH_JOBS, (LIVE_STATES,))]

    def by_token(self, token_hash: str) -> WorkerRecord | None:
        """The live worker whose token hashes to ``token_hash`` (a replica that did not start it)."""
        row = self.db.row(WORKERS_WITH_JOBS + " AND w.token_hash = %s", (LIVE_STATES, token_hash))
        return None if row is None else shared_worker(row)

    def touch(self, worker_id: str, at: float) -> None:
        """Record a contact (a heartbeat or a job-take) without rewriting the row."""
        self.db.execute("UPDATE workers SET last_seen = GREATEST(last_seen, %s) WHERE id = %s", (at, worker_id))

    def recent(self, endpoint: str | None, limit: int = 50) -> list[dict[str, Any]]:
        if endpoint:
            return self.db.rows("SELECT * FROM workers WHERE endpoint = %s ORDER BY requested_at DESC LIMIT %s",
                                (endpoint, limit))
        return self.db.rows("SELECT * FROM workers ORDER BY requested_at DESC LIMIT %s", (limit,))


LEDGER_ADD = (
    "INSERT INTO ledger (worker_id, endpoint, day, gpu_type, gpus, seconds, cost) VALUES (%s, %s, %s, %s, "
    "%s, %s, %s) ON CONFLICT (worker_id, day) DO UPDATE SET seconds = ledger.seconds + excluded.seconds, "
    "cost = CASE WHEN ledger.cost IS NULL OR excluded.cost IS NULL THEN NULL "
    "ELSE ledger.cost + excluded.cost END")


class PostgresLedger:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, e: LedgerEntry) -> None:
        self.db.execute(LEDGER_ADD, astuple(e))

    def settle(self, worker_id: str, start: float, until: float, entries: list[LedgerEntry]) -> float:
        """Add ``entries`` (the worker's seconds from ``start`` to ``until``) if the worker's row is billed up to
        ``start``, and move that to ``until``, in one transaction; return where its billing stands now (``until``,
        or what another replica recorded: then nothing was added, and no second is counted twice)."""
        def work(conn: Conn) -> float:
            with conn.transaction():
                moved = conn.execute("UPDATE workers SET billed_until = %s WHERE id = %s AND "
                                     "COALESCE(billed_until, requested_at) = %s", (until, worker_id, start)).rowcount
                if not moved:
                    row = conn.execute("SELECT COALESCE(billed_until, requested_at) AS b FROM workers WHERE id = %s",
                                       (worker_id,)).fetchone()
                    if row is not None:
                        return float(row["b"])
                for e in entries:
                    conn.execute(LEDGER_ADD, astuple(e))
            return until
        return self.db.run(work)

    def spent(self, endpoint: str, day: str) -> float:
        row = self.db.row("SELECT COALESCE(SUM(cost), 0) AS c FROM ledger WHERE endpoint = %s AND day = %s",
                          (endpoint, day))
        return float(row["c"]) if row else 0.0

    def usage(self, days: int = 31) -> list[dict[str, Any]]:
        rows = self.db.rows(
            "SELECT endpoint, day, gpu_type, SUM(gpus * seconds) AS gpu_seconds, SUM(seconds) AS worker_seconds, "
            "COUNT(*) AS workers, SUM(cost) AS cost, COUNT(*) FILTER (WHERE cost IS NULL) AS unpriced FROM ledger "
            "GROUP BY endpoint, day, gpu_type ORDER BY day DESC, endpoint LIMIT %s", (days * 50,))
        return [{"endpoint": r["endpoint"], "day": r["day"], "gpu_type": r["gpu_type"],
                 "gpu_seconds": r["gpu_seconds"], "worker_seconds": r["worker_seconds"], "workers": r["workers"],
                 "cost": None if r["unpriced"] else r["cost"]} for r in rows]

    def worker_seconds(self, worker_id: str) -> float:
        row = self.db.row("SELECT COALESCE(SUM(seconds), 0) AS s FROM ledger WHERE worker_id = %s", (worker_id,))
        return float(row["s"]) if row else 0.0

    def entries(self) -> list[LedgerEntry]:
        rows = self.db.rows(f"SELECT {LEDGER_COLUMNS} FROM ledger ORDER BY day, worker_id")
        return [LedgerEntry(*(r[c] for c in LEDGER_COLUMNS.split(", "))) for r in rows]

    def restore(self, entries: list[LedgerEntry]) -> int:
        known = {(r["worker_id"], r["day"]) for r in self.db.rows("SELECT worker_id, day FROM ledger")}
        fresh = [e for e in entries if (e.worker_id, e.day) not in known]
        if fresh:
            self.db.many(f"INSERT INTO ledger ({LEDGER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                         "ON CONFLICT (worker_id, day) DO NOTHING", [astuple(e) for e in fresh])
        return len(fresh)


class PostgresHistory:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, entry: HistoryEntry) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in HISTORY_COLUMNS.split(", ")[1:])
        self.db.execute(f"INSERT INTO requests ({HISTORY_COLUMNS}) VALUES ({', '.join(['%s'] * 8)}) "
                        f"ON CONFLICT (job_id) DO UPDATE SET {updates}", history_values(entry))

    def query(self, query: HistoryQuery) -> list[HistoryEntry]:
        where, params = history_where(query, "%s")
        rows = self.db.rows(f"SELECT {HISTORY_COLUMNS} FROM requests WHERE {where} "
                            "ORDER BY created_at DESC, job_id LIMIT %s", (*params, query.limit))
        return [history_from_row(r) for r in rows]

    def prune(self, before: float, limit: int) -> int:
        return self.db.run(lambda c: c.execute(
            "DELETE FROM requests WHERE job_id IN (SELECT job_id FROM requests WHERE completed_at < %s "
            "ORDER BY completed_at LIMIT %s)", (before, limit)).rowcount)


class PostgresEndpoints:
    """Endpoint specs, their secret environment sealed (AES-GCM) under a key the database does not hold (the
    gateway's 0600 configuration carries it)."""

    def __init__(self, db: Database, key: str) -> None:
        self.db = db
        self.key = key

    def put(self, name: str, endpoint: StoredEndpoint) -> None:
        self.db.execute(
            "INSERT INTO endpoints (name, spec, secret_env, revision, updated_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, secret_env = excluded.secret_env, "
            "revision = excluded.revision, updated_at = excluded.updated_at, deleting = false",
            (name, endpoint.spec.model_dump_json(), seal_env(self.key, name, endpoint.secret_env), endpoint.revision,
             time.time()))

    def all(self) -> dict[str, StoredEndpoint]:
        rows = self.db.rows("SELECT name, spec, secret_env, revision FROM endpoints")
        return {r["name"]: StoredEndpoint(EndpointSpec.model_validate_json(r["spec"]),
                                          open_env(self.key, r["name"], r["secret_env"], self.db.where),
                                          r["revision"]) for r in rows}

    def revisions(self) -> dict[str, tuple[str, bool]]:
        """Every endpoint's revision and whether it is being removed (what a replica compares with its own each
        tick: gateway/shared_state.py)."""
        return {r["name"]: (r["revision"], r["deleting"])
                for r in self.db.rows("SELECT name, revision, deleting FROM endpoints")}

    def mark_deleting(self, name: str) -> None:
        self.db.execute("UPDATE endpoints SET deleting = true WHERE name = %s", (name,))

    def get(self, name: str) -> StoredEndpoint | None:
        r = self.db.row("SELECT spec, secret_env, revision FROM endpoints WHERE name = %s", (name,))
        if r is None:
            return None
        return StoredEndpoint(EndpointSpec.model_validate_json(r["spec"]),
                              open_env(self.key, name, r["secret_env"], self.db.where), r["revision"])

    def delete(self, name: str) -> None:
        self.db.execute("DELETE FROM endpoints WHERE name = %s", (name,))
