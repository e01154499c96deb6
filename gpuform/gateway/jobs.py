"""Jobs: the record, RunPod's status shape, and their rows in the durable store."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from gpuform.gateway.db import Database

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
_COLUMNS = ("id, endpoint, status, input, output, error, webhook, sync, created_at, started_at, completed_at, "
            "execution_timeout, ttl, low_priority, attempts, retried, worker_id, idempotency_key, expires_at")


@dataclass(slots=True, eq=False)
class Job:
    id: str
    endpoint: str
    input: Any
    created_at: float
    execution_timeout: float
    ttl: float
    status: str = IN_QUEUE
    webhook: str | None = None
    sync: bool = False
    low_priority: bool = False
    started_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    retried: int = 0
    worker_id: str | None = None
    idempotency_key: str | None = None
    output: Any = None
    error: Any = None
    expires_at: float | None = None
    lease_until: float = 0.0
    progress: Any = None
    chunks: list[Any] = field(default_factory=list)
    drained: int = 0
    _done: asyncio.Event | None = None
    _chunk: asyncio.Event | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def done_event(self) -> asyncio.Event:
        if self._done is None:
            self._done = asyncio.Event()
            if self.terminal:
                self._done.set()
        return self._done

    def chunk_event(self) -> asyncio.Event:
        if self._chunk is None:
            self._chunk = asyncio.Event()
        return self._chunk

    def notify_chunk(self) -> None:
        if self._chunk is not None:
            self._chunk.set()

    def finish(self) -> None:
        if self._done is not None:
            self._done.set()
        self.notify_chunk()

    def delay_ms(self, now: float | None = None) -> int:
        end = self.started_at if self.started_at is not None else (now or time.time())
        return max(0, round((end - self.created_at) * 1000))

    def execution_ms(self, now: float | None = None) -> int:
        if self.started_at is None:
            return 0
        end = self.completed_at if self.completed_at is not None else (now or time.time())
        return max(0, round((end - self.started_at) * 1000))

    def view(self, now: float | None = None) -> dict[str, Any]:
        """The RunPod status body: id, status, delayTime, executionTime, output/error, workerId."""
        out: dict[str, Any] = {"id": self.id, "status": self.status, "delayTime": self.delay_ms(now),
                               "executionTime": self.execution_ms(now)}
        if self.status == IN_PROGRESS and self.progress is not None:
            out["output"] = self.progress
        elif self.output is not None or self.status == COMPLETED:
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error
        if self.worker_id:
            out["workerId"] = self.worker_id
        if self.retried:
            out["retries"] = self.retried
        return out

    def worker_payload(self) -> dict[str, Any]:
        """What a worker receives from job-take: RunPod's job object."""
        payload: dict[str, Any] = {"id": self.id, "input": self.input}
        if self.webhook:
            payload["webhook"] = self.webhook
        return payload


class JobStore:
    """Rows of the ``jobs`` table. Every method commits before it returns."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, job: Job) -> None:
        self.db.execute(
            f"INSERT INTO jobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (job.id, job.endpoint, job.status, json.dumps(job.input), None, None, job.webhook, int(job.sync),
             job.created_at, None, None, job.execution_timeout, job.ttl, int(job.low_priority), 0, job.retried,
             None, job.idempotency_key, None))

    def started(self, jobs: list[Job]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("UPDATE jobs SET status=?, started_at=?, attempts=?, worker_id=? WHERE id=?",
                             [(j.status, j.started_at, j.attempts, j.worker_id, j.id) for j in jobs])

    def finished(self, job: Job) -> None:
        self.db.execute("UPDATE jobs SET status=?, output=?, error=?, completed_at=?, expires_at=?, attempts=?, "
                        "worker_id=?, started_at=? WHERE id=?",
                        (job.status, json.dumps(job.output), json.dumps(job.error), job.completed_at,
                         job.expires_at, job.attempts, job.worker_id, job.started_at, job.id))

    def requeued(self, job: Job) -> None:
        self.db.execute("UPDATE jobs SET status=?, output=NULL, error=NULL, started_at=NULL, completed_at=NULL, "
                        "expires_at=NULL, worker_id=NULL, attempts=?, retried=? WHERE id=?",
                        (job.status, job.attempts, job.retried, job.id))

    def delete(self, job_ids: list[str]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM jobs WHERE id=?", [(i,) for i in job_ids])

    def get(self, job_id: str) -> Job | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else _from_row(row)

    def by_idempotency(self, endpoint: str, key: str) -> Job | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE endpoint=? AND idempotency_key=?",
                              (endpoint, key)).fetchone()
        return None if row is None else _from_row(row)

    def open_jobs(self) -> list[Job]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE status IN ('IN_QUEUE', 'IN_PROGRESS') "
                               "ORDER BY created_at").fetchall()
        return [_from_row(r) for r in rows]

    def expired(self, now: float, limit: int = 1000) -> list[str]:
        rows = self.db.execute("SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at < ? LIMIT ?",
                               (now, limit)).fetchall()
        return [str(r["id"]) for r in rows]

    def ttl_expired(self, now: float, limit: int = 1000) -> list[str]:
        rows = self.db.execute("SELECT id FROM jobs WHERE created_at + ttl < ? AND status IN ('IN_QUEUE', "
                               "'IN_PROGRESS') LIMIT ?", (now, limit)).fetchall()
        return [str(r["id"]) for r in rows]

    def counts(self, endpoint: str) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) AS n, SUM(retried) AS r FROM jobs WHERE endpoint=? "
                               "GROUP BY status", (endpoint,)).fetchall()
        out = {str(r["status"]): int(r["n"]) for r in rows}
        out["_retried"] = sum(int(r["r"] or 0) for r in rows)
        return out


def _from_row(row: Any) -> Job:
    job = Job(id=row["id"], endpoint=row["endpoint"], input=json.loads(row["input"]) if row["input"] else None,
              created_at=row["created_at"], execution_timeout=row["execution_timeout"], ttl=row["ttl"],
              status=row["status"], webhook=row["webhook"], sync=bool(row["sync"]),
              low_priority=bool(row["low_priority"]), started_at=row["started_at"],
              completed_at=row["completed_at"], attempts=row["attempts"], retried=row["retried"],
              worker_id=row["worker_id"], idempotency_key=row["idempotency_key"], expires_at=row["expires_at"])
    job.output = json.loads(row["output"]) if row["output"] else None
    job.error = json.loads(row["error"]) if row["error"] else None
    return job
