"""The shared queue's SQL on PostgreSQL: every change to a job is one conditional statement (or one short
transaction), so replicas racing for the same job never both win; each change NOTIFYs the schema's channel in
the same transaction (delivered at commit, to every replica's listener: :mod:`gpuform.gateway.pgnotify`).

Notification payloads are tab-separated: the sending replica's origin, then one of
``job ENDPOINT`` (a job is queued), ``done JOB WORKER`` (a job ended; WORKER's slot is free),
``chunk JOB`` (stream chunk or progress), ``stop WORKER`` (a stop or control signal), ``release WORKER`` (answer
its stop poll now) and ``slot WORKER`` (one of its jobs went back to the queue).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from gpuform.gateway.jobs import Job
from gpuform.gateway.postgres import Conn, Database
from gpuform.gateway.rows import HISTORY_COLUMNS, JOB_COLUMNS, OPEN_STATUSES, job_from_row
from gpuform.gateway.states import JobStatus

COLUMNS = JOB_COLUMNS + ", lease_until, progress, chunks_dropped, queue_pos"
Note = tuple[str, ...]  # a notification: its kind and arguments
_SAFE = re.compile(r"[a-z0-9_]+")


def channel_of(schema: str) -> str:
    """The NOTIFY channel of a schema's queue (an identifier of at most 63 characters)."""
    return "gpuform_q_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def _lock_key(kind: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"gpuform-queue\0{kind}\0{name}".encode()).digest()[:8], "big", signed=True)


def _job(row: Any) -> Job:
    job = job_from_row(row)
    job.lease_until = row["lease_until"] or 0.0
    job.progress = json.loads(row["progress"]) if row["progress"] else None
    job.chunks_dropped = row["chunks_dropped"]
    return job


@dataclass(frozen=True)
class Admission:
    """Limits a submit is checked against (None: no limit), and the Retry-After of a refusal."""

    max_queue: int | None
    max_queued: int | None
    max_open: int | None
    retry_after: int

    @property
    def limited(self) -> bool:
        return not (self.max_queue is None and self.max_queued is None and self.max_open is None)


@dataclass(frozen=True)
class Ending:
    """How matching jobs end: status, output and error (JSON text, or a SQL expression over the row)."""

    status: JobStatus
    output: str | None = None
    error: str | None = None
    error_sql: str | None = None  # instead of ``error``: an expression with the row's columns, e.g. attempts
    error_params: tuple[Any, ...] = ()


_HISTORY_UPDATES = ", ".join(f"{c} = excluded.{c}" for c in HISTORY_COLUMNS.split(", ")[1:])
# What a finish writes besides the jobs (CTEs over ``u``, the ended rows), as the runtime's finish listener does
# through the store for a gateway's own queue: the key's usage of the day (UTC) and the request-history row.
RECORDS = (
    "k AS (INSERT INTO key_usage (owner, endpoint, day, jobs, failed, execution_seconds) "
    "SELECT COALESCE(owner, ''), endpoint, to_char(to_timestamp(completed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), "
    "count(*), count(*) FILTER (WHERE status <> 'COMPLETED'), COALESCE(sum(completed_at - started_at), 0) "
    "FROM u GROUP BY 1, 2, 3 ON CONFLICT (owner, endpoint, day) DO UPDATE SET jobs = key_usage.jobs + excluded.jobs, "
    "failed = key_usage.failed + excluded.failed, "
    "execution_seconds = key_usage.execution_seconds + excluded.execution_seconds), "
    f"r AS (INSERT INTO requests ({HISTORY_COLUMNS}) SELECT id, endpoint, owner, status, worker_id, created_at, "
    f"started_at, completed_at FROM u ON CONFLICT (job_id) DO UPDATE SET {_HISTORY_UPDATES})")


class Refused(Exception):
    """A submit over one of its limits (the queue turns it into QueueFull)."""


class PgQueue:
    def __init__(self, db: Database, channel: str, origin: str) -> None:
        if not (_SAFE.fullmatch(channel) and _SAFE.fullmatch(origin)):
            raise ValueError("the channel and origin are written into SQL: letters, digits and _ only")
        self.db = db
        self.channel = channel
        self.origin = origin

    def _note_sql(self, kind: str, *columns: str) -> str:
        """A pg_notify call in a statement: the notification ``kind`` with ``columns`` (SQL expressions)."""
        return f"pg_notify('{self.channel}', concat_ws(E'\\t', '{self.origin}', '{kind}', {', '.join(columns)}))"

    def _notify(self, conn: Conn, notes: Sequence[Note]) -> None:
        if notes:
            payloads = ["\t".join((self.origin, *n)) for n in notes]
            conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (self.channel, payloads))

    # ---- submit -------------------------------------------------------------------------------------

    def insert(self, job: Job, admission: Admission) -> tuple[Job, bool]:
        """Store a new job (after its limits, checked under locks so replicas cannot both pass the last
        place); the owner's earlier job with the same Idempotency-Key instead, if there is one."""
        if not admission.limited:
            return self._insert_now(job)

        def work(conn: Conn) -> tuple[Job, bool]:
            with conn.transaction():
                if job.idempotency_key:
                    first = self._by_key(conn, job)
                    if first is not None:
                        return first, False
                if admission.limited:
                    self._admit(conn, job, admission)
                conn.execute("INSERT INTO queue_endpoints (endpoint, woke_at) SELECT %s, %s WHERE NOT EXISTS "
                             f"(SELECT 1 FROM jobs WHERE endpoint = %s AND status IN {OPEN_STATUSES}) "
                             "ON CONFLICT (endpoint) DO UPDATE SET woke_at = excluded.woke_at",
                             (job.endpoint, job.created_at, job.endpoint))
                row = conn.execute(
                    f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join(['%s'] * 20)}) ON CONFLICT DO NOTHING "
                    "RETURNING id",
                    (job.id, job.endpoint, job.status, json.dumps(job.input), None, None, job.webhook, job.sync,
                     job.created_at, None, None, job.execution_timeout, job.ttl, job.low_priority, 0, job.retried,
                     None, job.idempotency_key, None, job.owner)).fetchone()
                if row is None:  # another replica stored the same key first
                    first = self._by_key(conn, job)
                    if first is not None:
                        return first, False
                self._notify(conn, [("job", job.endpoint)])
                return job, True
        return self.db.run(work)

    def _insert_now(self, job: Job) -> tuple[Job, bool]:
        """A submit without limits: one statement (the endpoint's wake time, the row, the notification)."""
        values = (job.id, job.endpoint, job.status, json.dumps(job.input), None, None, job.webhook, job.sync,
                  job.created_at, None, None, job.execution_timeout, job.ttl, job.low_priority, 0, job.retried,
                  None, job.idempotency_key, None, job.owner)
        query = ("WITH w AS (INSERT INTO queue_endpoints (endpoint, woke_at) SELECT %s, %s WHERE NOT EXISTS "
                 f"(SELECT 1 FROM jobs WHERE endpoint = %s AND status IN {OPEN_STATUSES}) "
                 "ON CONFLICT (endpoint) DO UPDATE SET woke_at = excluded.woke_at), "
                 f"j AS (INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({', '.join(['%s'] * 20)}) ON CONFLICT DO NOTHING "
                 f"RETURNING id, endpoint) SELECT {self._note_sql('job', 'endpoint')} FROM j")

        def work(conn: Conn) -> tuple[Job, bool]:
            if conn.execute(query, (job.endpoint, job.created_at, job.endpoint, *values)).fetchone() is not None:
                return job, True
            first = self._by_key(conn, job)  # another submit stored the same Idempotency-Key first
            if first is None:
                raise psycopg.errors.UniqueViolation(f"job id {job.id} is taken")
            return first, False
        return self.db.run(work)

    def _by_key(self, conn: Conn, job: Job) -> Job | None:
        row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE endpoint = %s AND COALESCE(owner, '') = %s AND "
                           "idempotency_key = %s", (job.endpoint, job.owner or "", job.idempotency_key)).fetchone()
        return None if row is None else _job(row)

    def _admit(self, conn: Conn, job: Job, limits: Admission) -> None:
        owner = job.owner or ""
        conn.execute("SELECT pg_advisory_xact_lock(%s), pg_advisory_xact_lock(%s)",
                     (_lock_key("endpoint", job.endpoint), _lock_key("owner", owner)))
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE endpoint = %s AND status = 'IN_QUEUE') AS queue, "
            "count(*) FILTER (WHERE COALESCE(owner, '') = %s AND status = 'IN_QUEUE') AS queued, "
            "count(*) FILTER (WHERE COALESCE(owner, '') = %s) AS open "
            f"FROM jobs WHERE status IN {OPEN_STATUSES} AND (endpoint = %s OR COALESCE(owner, '') = %s)",
            (job.endpoint, owner, owner, job.endpoint, owner)).fetchone()
        assert row is not None
        if limits.max_queue is not None and row["queue"] >= limits.max_queue:
            raise Refused(f"endpoint {job.endpoint} has {limits.max_queue} jobs queued, its max_queue")
        if limits.max_queued is not None and row["queued"] >= limits.max_queued:
            raise Refused(f"API key {owner!r} has {limits.max_queued} jobs queued, its max_queued")
        if limits.max_open is not None and row["open"] >= limits.max_open:
            raise Refused(f"API key {owner!r} has {limits.max_open} jobs queued or running, its max_open_jobs")

    # ---- reads --------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        row = self.db.row(f"SELECT {COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        return None if row is None else _job(row)

    def running(self, worker_id: str | None = None) -> list[Job]:
        where = "status = 'IN_PROGRESS'" + (" AND worker_id = %s" if worker_id is not None else "")
        rows = self.db.rows(f"SELECT {COLUMNS} FROM jobs WHERE {where} ORDER BY started_at",
                            () if worker_id is None else (worker_id,))
        return [_job(r) for r in rows]

    def queued(self, endpoint: str) -> bool:
        return self.db.row("SELECT 1 FROM jobs WHERE endpoint = %s AND status = 'IN_QUEUE' LIMIT 1",
                           (endpoint,)) is not None

    def held(self, endpoint: str, worker_id: str) -> int:
        row = self.db.row("SELECT count(*) AS n FROM jobs WHERE worker_id = %s AND status = 'IN_PROGRESS' "
                          "AND endpoint = %s", (worker_id, endpoint))
        return int(row["n"]) if row else 0

    def stats(self, endpoint: str) -> dict[str, Any]:
        row = self.db.row(
            "SELECT count(*) FILTER (WHERE status = 'IN_QUEUE') AS queued, "
            "count(*) FILTER (WHERE status = 'IN_PROGRESS') AS running, "
            "count(*) FILTER (WHERE status = 'IN_QUEUE' AND NOT low_priority) AS scalable, "
            "min(created_at) FILTER (WHERE status = 'IN_QUEUE') AS oldest, "
            "(SELECT woke_at FROM queue_endpoints WHERE endpoint = %s) AS woke_at "
            f"FROM jobs WHERE endpoint = %s AND status IN {OPEN_STATUSES}", (endpoint, endpoint))
        assert row is not None
        return dict(row)

    # ---- workers take and post ------------------------------------------------------------------------

    def claim(self, endpoint: str, worker_id: str, count: int, limit: int | None, now: float, lease: float
              ) -> tuple[list[Job], int]:
        """Hand up to ``count`` queued jobs (requeued ones first, then oldest) to ``worker_id``, which may hold
        at most ``limit`` at once; rows another replica is claiming are skipped, never handed twice. Also
        returns how many of the endpoint's jobs the worker held before (the same statement: no second trip)."""
        room = "%(count)s" if limit is None else "GREATEST(0, LEAST(%(count)s, %(limit)s - (SELECT n FROM h)))"
        params = {"endpoint": endpoint, "worker": worker_id, "count": count, "limit": limit, "now": now,
                  "lease": lease}
        query = (
            "WITH h AS (SELECT count(*) AS n FROM jobs WHERE worker_id = %(worker)s AND status = 'IN_PROGRESS' "
            "AND endpoint = %(endpoint)s), "
            f"pick AS (SELECT id AS pid FROM jobs WHERE endpoint = %(endpoint)s AND status = 'IN_QUEUE' "
            f"ORDER BY queue_pos LIMIT {room} FOR UPDATE SKIP LOCKED), "
            "u AS (UPDATE jobs SET status = 'IN_PROGRESS', started_at = %(now)s, worker_id = %(worker)s, "
            "attempts = attempts + 1, lease_until = %(lease)s FROM pick WHERE id = pid AND status = 'IN_QUEUE' "
            f"RETURNING {COLUMNS}) "
            "SELECT u.*, h.n AS held_before FROM h LEFT JOIN u ON true")
        rows = self.db.run(lambda conn: conn.execute(query, params).fetchall())
        held = int(rows[0]["held_before"]) if rows else 0
        taken = [r for r in rows if r["id"] is not None]
        return [_job(r) for r in sorted(taken, key=lambda r: int(r["queue_pos"]))], held

    def progress(self, job_id: str, worker_id: str, output: str, lease: float) -> Job | None:
        row = self.db.row(f"WITH u AS (UPDATE jobs SET progress = %s, lease_until = %s WHERE id = %s AND "
                          f"status = 'IN_PROGRESS' AND worker_id = %s RETURNING {COLUMNS}) "
                          f"SELECT *, {self._note_sql('chunk', 'id')} FROM u",
                          (output, lease, job_id, worker_id))
        return None if row is None else _job(row)

    def chunk(self, job_id: str, worker_id: str, output: str, size: int, per_job: int, total: int, lease: float
              ) -> Job | None:
        """Append a stream chunk within the budgets (``per_job`` bytes for this job, ``total`` for the streams
        of all running jobs; a finished job's chunks stay until its result's retention ends); None when the job
        is not the worker's or it is over a budget (then counted as dropped)."""
        owned = "id = %(id)s AND status = 'IN_PROGRESS' AND worker_id = %(worker)s"
        params = {"id": job_id, "worker": worker_id, "output": output, "size": size, "per_job": per_job,
                  "total": total, "lease": lease}

        query = ("WITH j AS (UPDATE jobs SET chunk_count = chunk_count + 1, chunk_bytes = chunk_bytes + %(size)s, "
                 f"lease_until = %(lease)s WHERE {owned} AND chunk_bytes + %(size)s <= %(per_job)s AND "
                 "(SELECT COALESCE(sum(chunk_bytes), 0) FROM jobs WHERE chunk_bytes > 0 AND status = 'IN_PROGRESS') "
                 "+ %(size)s <= %(total)s "
                 f"RETURNING {COLUMNS}, chunk_count), "
                 "c AS (INSERT INTO job_chunks (job_id, seq, output) SELECT id, chunk_count, %(output)s FROM j) "
                 f"SELECT *, {self._note_sql('chunk', 'id')} FROM j")

        def work(conn: Conn) -> Job | None:
            row = conn.execute(query, params).fetchone()
            if row is None:
                conn.execute(f"UPDATE jobs SET chunks_dropped = chunks_dropped + 1, lease_until = %(lease)s "
                             f"WHERE {owned}", params)
                return None
            return _job(row)
        return self.db.run(work)

    def drain(self, job_id: str) -> list[Any]:
        """Chunks stored since the previous drain of this job (from any replica)."""
        def work(conn: Conn) -> list[Any]:
            with conn.transaction():
                row = conn.execute("SELECT drained, chunk_count FROM jobs WHERE id = %s FOR UPDATE",
                                   (job_id,)).fetchone()
                if row is None or row["chunk_count"] == row["drained"]:
                    return []
                conn.execute("UPDATE jobs SET drained = %s WHERE id = %s", (row["chunk_count"], job_id))
                rows = conn.execute("SELECT output FROM job_chunks WHERE job_id = %s AND seq > %s AND seq <= %s "
                                    "ORDER BY seq", (job_id, row["drained"], row["chunk_count"])).fetchall()
                return [json.loads(r["output"]) for r in rows]
        return self.db.run(work)

    def chunks_since(self, job_id: str, seq: int) -> list[Any]:
        rows = self.db.rows("SELECT output FROM job_chunks WHERE job_id = %s AND seq > %s ORDER BY seq",
                            (job_id, seq))
        return [json.loads(r["output"]) for r in rows]

    def renew(self, worker_id: str, job_ids: list[str], lease: float, now: float) -> list[str]:
        """Extend the leases of the worker's jobs; signal again those stopped meanwhile (returned)."""
        def work(conn: Conn) -> list[str]:
            with conn.transaction():
                conn.execute("UPDATE jobs SET lease_until = %s WHERE id = ANY(%s) AND worker_id = %s AND "
                             "status = 'IN_PROGRESS'", (lease, job_ids, worker_id))
                rows = conn.execute("SELECT id FROM jobs WHERE id = ANY(%s) AND worker_id = %s AND status IN "
                                    "('CANCELLED', 'TIMED_OUT')", (job_ids, worker_id)).fetchall()
                stopped = [str(r["id"]) for r in rows]
                self._signal(conn, [(worker_id, j) for j in stopped], now)
                return stopped
        return self.db.run(work) if job_ids else []

    def overdue(self, now: float) -> list[tuple[str, float]]:
        """Running jobs past their execution timeout: id and timeout."""
        rows = self.db.rows("SELECT id, execution_timeout FROM jobs WHERE status = 'IN_PROGRESS' AND "
                            "started_at + execution_timeout < %s", (now,))
        return [(str(r["id"]), float(r["execution_timeout"])) for r in rows]

    def ttl_expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        """Open jobs past their ttl: id and endpoint."""
        rows = self.db.rows(f"SELECT id, endpoint FROM jobs WHERE created_at + ttl < %s AND status IN "
                            f"{OPEN_STATUSES} LIMIT %s", (now, limit))
        return [(str(r["id"]), str(r["endpoint"])) for r in rows]

    # ---- ending and requeueing ----------------------------------------------------------------------

    def finish(self, where: str, params: Sequence[Any], end: Ending, now: float, retention: tuple[float, float],
               signal: bool) -> list[tuple[Job, int]]:
        """End the open jobs matching ``where``; with ``signal`` the workers running them are told to stop.
        ``retention``: (sync, async) seconds the results are kept. The same statement counts the jobs in their
        keys' usage and adds their request-history rows (what the runtime's finish listener writes for a
        gateway's own queue). Each job comes with how many of its endpoint's
        jobs its worker ran before this statement (it included), read by the same statement."""
        error = end.error_sql if end.error_sql is not None else "%s"
        error_params = end.error_params if end.error_sql is not None else (end.error,)

        stop = self._note_sql("stop", "worker_id")
        done = self._note_sql("done", "id", "COALESCE(worker_id, '')")
        query = (f"WITH u AS (UPDATE jobs SET status = %s, output = %s, error = {error}, completed_at = %s, "
                 "expires_at = %s + CASE WHEN sync THEN %s ELSE %s END, lease_until = NULL, progress = NULL "
                 f"WHERE {where} RETURNING {COLUMNS}), "
                 "s AS (INSERT INTO worker_signals (worker_id, job_id, created_at) SELECT worker_id, id, %s FROM u "
                 f"WHERE %s AND worker_id IS NOT NULL), {RECORDS} "
                 "SELECT *, (SELECT count(*) FROM jobs h WHERE h.worker_id = u.worker_id AND "
                 "h.status = 'IN_PROGRESS' AND h.endpoint = u.endpoint) AS held_before, "
                 f"{done}, "
                 f"CASE WHEN %s AND worker_id IS NOT NULL THEN {stop} END FROM u")
        rows = self.db.run(lambda conn: conn.execute(query, (end.status, end.output, *error_params, now, now,
                                                             *retention, *params, now, signal, signal)).fetchall())
        return [(_job(r), int(r["held_before"])) for r in rows]

    def requeue(self, where: str, params: Sequence[Any], max_attempts: int) -> list[tuple[Job, str]]:
        """Put running jobs matching ``where`` (with attempts left) back at the head of their queue; return
        them with the worker each was taken from."""
        def work(conn: Conn) -> list[tuple[Job, str]]:
            with conn.transaction():
                rows = conn.execute(
                    f"WITH old AS (SELECT id AS oid, worker_id AS was FROM jobs WHERE {where} AND "
                    "status = 'IN_PROGRESS' AND attempts < %s FOR UPDATE) "
                    "UPDATE jobs SET status = 'IN_QUEUE', started_at = NULL, worker_id = NULL, progress = NULL, "
                    "lease_until = NULL, queue_pos = -nextval('job_order'), chunk_count = 0, chunk_bytes = 0, "
                    f"drained = 0, chunks_dropped = 0 FROM old WHERE id = oid RETURNING {COLUMNS}, was",
                    (*params, max_attempts)).fetchall()
                if not rows:
                    return []
                ids = [r["id"] for r in rows]
                conn.execute("DELETE FROM job_chunks WHERE job_id = ANY(%s)", (ids,))
                self._notify(conn, [n for r in rows for n in (("slot", r["was"]), ("job", r["endpoint"]))])
                return [(_job(r), str(r["was"])) for r in rows]
        return self.db.run(work)

    def retry(self, job_id: str, now: float) -> Job | None:
        """A FAILED or TIMED_OUT job back in the queue (at its end) under the same id."""
        def work(conn: Conn) -> Job | None:
            with conn.transaction():
                row = conn.execute(
                    "UPDATE jobs SET status = 'IN_QUEUE', output = NULL, error = NULL, progress = NULL, "
                    "started_at = NULL, completed_at = NULL, expires_at = NULL, worker_id = NULL, attempts = 0, "
                    "retried = retried + 1, created_at = %s, queue_pos = nextval('job_order'), lease_until = NULL, "
                    "chunk_count = 0, chunk_bytes = 0, drained = 0, chunks_dropped = 0 "
                    f"WHERE id = %s AND status IN ('FAILED', 'TIMED_OUT') RETURNING {COLUMNS}",
                    (now, job_id)).fetchone()
                if row is None:
                    return None
                conn.execute("DELETE FROM job_chunks WHERE job_id = %s", (job_id,))
                self._notify(conn, [("job", row["endpoint"])])
                return _job(row)
        return self.db.run(work)

    def restore(self, lease: float) -> int:
        """A replica starting: running jobs get at least a fresh lease (their workers could not reach a gateway
        while none was up); returns how many jobs are open."""
        def work(conn: Conn) -> int:
            conn.execute("UPDATE jobs SET lease_until = %s WHERE status = 'IN_PROGRESS' AND "
                         "COALESCE(lease_until, 0) < %s", (lease, lease))
            row = conn.execute(f"SELECT count(*) AS n FROM jobs WHERE status IN {OPEN_STATUSES}").fetchone()
            return int(row["n"]) if row else 0
        return self.db.run(work)

    # ---- worker signals -----------------------------------------------------------------------------

    def _signal(self, conn: Conn, stops: Sequence[tuple[str | None, str]], now: float) -> None:
        stops = [(w, j) for w, j in stops if w]
        if stops:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO worker_signals (worker_id, job_id, created_at) VALUES (%s, %s, %s)",
                                [(w, j, now) for w, j in stops])
            self._notify(conn, [("stop", w) for w in sorted({w for w, _ in stops if w})])

    def control(self, worker_id: str, command: str, now: float) -> None:
        def work(conn: Conn) -> None:
            with conn.transaction():
                conn.execute("INSERT INTO worker_signals (worker_id, control, created_at) VALUES (%s, %s, %s)",
                             (worker_id, command, now))
                self._notify(conn, [("stop", worker_id)])
        self.db.run(work)

    def notify_all(self, note: Note) -> None:
        self.db.run(lambda conn: self._notify(conn, [note]))

    def release(self, worker_id: str) -> None:
        self.db.run(lambda conn: self._notify(conn, [("release", worker_id)]))

    def stops(self, worker_id: str) -> tuple[list[str], bool]:
        """Take the worker's pending stop signals; and whether a control waits for it."""
        row = self.db.row(
            "WITH s AS (DELETE FROM worker_signals WHERE worker_id = %s AND job_id IS NOT NULL RETURNING job_id) "
            "SELECT (SELECT array_agg(DISTINCT job_id) FROM s) AS stops, EXISTS (SELECT 1 FROM worker_signals "
            "WHERE worker_id = %s AND control IS NOT NULL) AS control", (worker_id, worker_id))
        if row is None:
            return [], False
        return sorted(row["stops"] or []), bool(row["control"])

    def take_control(self, worker_id: str) -> str | None:
        rows = self.db.rows("DELETE FROM worker_signals WHERE worker_id = %s AND control IS NOT NULL "
                            "RETURNING id, control", (worker_id,))
        return str(max(rows, key=lambda r: int(r["id"]))["control"]) if rows else None

    def prune_signals(self, before: float) -> None:
        self.db.execute("DELETE FROM worker_signals WHERE created_at < %s", (before,))
