"""What every store reads back the same way: jobs and workers from their rows, endpoint secrets sealed.

A row is anything indexed by column name (``sqlite3.Row``, a psycopg ``dict_row``); JSON columns hold text.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from gpuform.errors import StoreError
from gpuform.gateway.jobs import Job
from gpuform.gateway.states import JobStatus, WorkerState
from gpuform.gateway.store import HistoryEntry, HistoryQuery
from gpuform.gateway.workers import WorkerRecord
from gpuform.provider import WorkerInfo
from gpuform.util.sealing import SealError, is_sealed, seal, unseal


class Row(Protocol):
    def __getitem__(self, column: str) -> Any: ...


JOB_COLUMNS = ("id, endpoint, status, input, output, error, webhook, sync, created_at, started_at, completed_at, "
               "execution_timeout, ttl, low_priority, attempts, retried, worker_id, idempotency_key, expires_at, "
               "owner")  # the order both stores insert in, and what job_from_row reads
OPEN_STATUSES = "('IN_QUEUE', 'IN_PROGRESS')"  # jobs queued or running, as SQL


def job_from_row(row: Row) -> Job:
    job = Job(id=row["id"], endpoint=row["endpoint"], input=json.loads(row["input"]) if row["input"] else None,
              created_at=row["created_at"], execution_timeout=row["execution_timeout"], ttl=row["ttl"],
              status=JobStatus(row["status"]), webhook=row["webhook"], sync=bool(row["sync"]),
              low_priority=bool(row["low_priority"]), started_at=row["started_at"],
              completed_at=row["completed_at"], attempts=row["attempts"], retried=row["retried"],
              worker_id=row["worker_id"], idempotency_key=row["idempotency_key"], expires_at=row["expires_at"],
              owner=row["owner"])
    job.output = json.loads(row["output"]) if row["output"] else None
    job.error = json.loads(row["error"]) if row["error"] else None
    job.size = len(row["output"] or "") + len(row["error"] or "")
    return job


LEDGER_COLUMNS = "worker_id, endpoint, day, gpu_type, gpus, seconds, cost"  # LedgerEntry's fields, in order
HISTORY_COLUMNS = "job_id, endpoint, owner, status, worker_id, created_at, started_at, completed_at"


def history_from_row(row: Row) -> HistoryEntry:
    return HistoryEntry(row["job_id"], row["endpoint"], row["owner"], JobStatus(row["status"]), row["worker_id"],
                        row["created_at"], row["started_at"], row["completed_at"])


def history_values(e: HistoryEntry) -> tuple[Any, ...]:
    """An entry's values in :data:`HISTORY_COLUMNS` order."""
    return (e.job_id, e.endpoint, e.owner, str(e.status), e.worker_id, e.created_at, e.started_at, e.completed_at)


def history_where(q: HistoryQuery, mark: str) -> tuple[str, list[Any]]:
    """The WHERE clause (with ``mark`` as the placeholder: ``?`` or ``%s``) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if q.endpoint is not None:
        clauses.append(f"endpoint = {mark}")
        params.append(q.endpoint)
    if q.owner is not None:
        clauses.append(f"COALESCE(owner, '') = {mark}")
        params.append(q.owner)
    if q.statuses:
        clauses.append(f"status IN ({', '.join([mark] * len(q.statuses))})")
        params += sorted(str(s) for s in q.statuses)
    if q.since is not None:
        clauses.append(f"created_at >= {mark}")
        params.append(q.since)
    if q.before is not None:
        clauses.append(f"created_at < {mark}")
        params.append(q.before)
    return " AND ".join(clauses) or "TRUE", params


def worker_from_row(r: Row) -> WorkerRecord:
    """A worker as a restarted gateway adopts it: one that held jobs is idle until it takes more."""
    state = WorkerState(r["state"])
    now = time.time()
    w = WorkerRecord(id=r["id"], endpoint=r["endpoint"], pool=r["pool"], revision=r["spec_revision"] or "",
                     token_hash=r["token_hash"], requested_at=r["requested_at"],
                     state=WorkerState.IDLE if state == WorkerState.RUNNING else state,
                     host=r["host"] or "", gpu_type=r["gpu_type"] or "", gpus=r["gpus"], price=r["price"],
                     ready_at=r["ready_at"], first_job_at=r["first_job_at"], last_seen=r["last_seen"],
                     timeline=json.loads(r["timeline"] or "{}"), billed_until=now)
    if w.state == WorkerState.IDLE:
        w.idle_since = now
    if w.state == WorkerState.SLEEPING:
        w.asleep_since = now
    if w.host:  # enough for the provider to find, stop and observe it again
        w.info = WorkerInfo(w.id, w.endpoint, w.host, "running", w.gpu_type or "cpu")
    return w


def seal_env(key: str, name: str, env: dict[str, str]) -> str:
    """An endpoint's secret environment sealed (AES-GCM) under ``key``, bound to the endpoint's name."""
    return seal(key, json.dumps(env).encode(), name)


def open_env(key: str, name: str, value: str, where: str) -> dict[str, str]:
    """The secret environment :func:`seal_env` sealed (or plain JSON, as gpuform 0.1.0 stored it); raises
    StoreError when it does not open with ``key``."""
    if not is_sealed(value):
        opened: dict[str, str] = json.loads(value)
        return opened
    try:
        found: dict[str, str] = json.loads(unseal(key, value, name))
    except SealError as exc:
        raise StoreError(f"the secrets of endpoint {name} in {where} do not open with this gateway's key",
                         "The database belongs to another deployment, or the key in its configuration "
                         "changed; apply again to re-register the endpoint.") from exc
    return found
