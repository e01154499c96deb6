"""What the gateway keeps durably, as protocols: jobs (the queue), workers, the ledger, endpoints, metadata.

:class:`gpuform.gateway.sqlite.SQLiteStore` is the embedded implementation (the default);
:class:`gpuform.gateway.postgres.PostgresStore` keeps the same in PostgreSQL. Obligations of every
implementation (``tests/unit/test_gateway_store.py`` checks them on each one):

- every method has committed its change when it returns: a gateway killed with -9 right after an answer
  loses nothing it answered for;
- the schema is versioned and migrates in place; a store written by a newer gpuform is refused with a
  :class:`~gpuform.errors.StoreError` that says so;
- a failure (the disk, the database or the connection to it) is a :class:`~gpuform.errors.StoreError`, which
  the gateway answers with 503 and Retry-After (507 for :class:`~gpuform.errors.StoreFull`), never a 500;
- nothing here interprets jobs or workers: the queue, the fleet and the ledger own those rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gpuform.gateway.jobs import Job
from gpuform.gateway.states import JobStatus
from gpuform.gateway.workers import WorkerRecord
from gpuform.spec import EndpointSpec


@dataclass(frozen=True)
class StoredEndpoint:
    spec: EndpointSpec
    secret_env: dict[str, str]
    revision: str


@dataclass(frozen=True)
class LedgerEntry:
    """Seconds one worker ran on one UTC day, and what they cost (``None``: no price known)."""

    worker_id: str
    endpoint: str
    day: str
    gpu_type: str
    gpus: int
    seconds: float
    cost: float | None


@dataclass(frozen=True)
class HistoryEntry:
    """One finished request as the request history keeps it: times, status, worker and key, never its input or
    output (those go with the job's result when its retention ends; the history row outlives them)."""

    job_id: str
    endpoint: str
    owner: str | None
    status: JobStatus
    worker_id: str | None
    created_at: float  # arrival (a retried job: its latest arrival)
    started_at: float | None  # None: it never ran (cancelled or expired in the queue)
    completed_at: float

    @classmethod
    def of(cls, job: Job) -> HistoryEntry:
        """The entry of a finished ``job``."""
        return cls(job.id, job.endpoint, job.owner, JobStatus(job.status), job.worker_id, job.created_at,
                   job.started_at, job.completed_at if job.completed_at is not None else job.created_at)

    @property
    def delay(self) -> float:
        """Seconds from arrival to start (to its end, for one that never started)."""
        return (self.started_at if self.started_at is not None else self.completed_at) - self.created_at

    @property
    def execution(self) -> float | None:
        return None if self.started_at is None else self.completed_at - self.started_at


@dataclass(frozen=True)
class HistoryQuery:
    """Which history rows to read: one endpoint's (None: every endpoint's), optionally one key's, statuses and
    arrivals since a time."""

    endpoint: str | None
    owner: str | None = None  # None: every key's
    statuses: frozenset[JobStatus] = frozenset()  # empty: every status
    since: float | None = None  # arrival at or after
    limit: int = 100
    before: float | None = None  # arrival strictly before (the next page: the last arrival of this one)


class HistoryRows(Protocol):
    def add(self, entry: HistoryEntry) -> None:
        """Record a finished request (a retried job's row is replaced by its latest run)."""
        ...

    def query(self, query: HistoryQuery) -> list[HistoryEntry]:
        """Matching rows, newest arrival first, at most ``query.limit``."""
        ...

    def prune(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` rows completed before ``before``, oldest first; return how many."""
        ...


class JobRows(Protocol):
    def insert(self, job: Job) -> int:
        """Store a new job; return the size of its input in bytes."""
        ...

    def input_of(self, job_id: str) -> Any:
        """The input of a job (the queue keeps big ones only here)."""
        ...

    def started(self, jobs: list[Job]) -> None: ...

    def finished(self, job: Job) -> int:
        """Store a job's end; return the size of its result (output and error) in bytes."""
        ...

    def requeued(self, job: Job) -> None: ...

    def delete(self, job_ids: list[str]) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def by_idempotency(self, endpoint: str, owner: str | None, key: str) -> Job | None: ...

    def count_usage(self, owner: str, endpoint: str, day: str, failed: bool, execution_seconds: float) -> None:
        """Add a finished job to its key's usage of the day."""
        ...

    def usage_by_key(self, days: int = 31) -> list[dict[str, Any]]: ...

    def open_jobs(self) -> list[Job]: ...

    def expired(self, now: float, limit: int) -> list[str]:
        """Finished jobs whose results are past retention, oldest first."""
        ...

    def ttl_expired(self, now: float, limit: int) -> list[str]:
        """Open jobs past their ttl."""
        ...

    def counts(self, endpoint: str) -> dict[str, int]:
        """Jobs by status, plus ``_retried``: how many retries were asked for."""
        ...


class WorkerRows(Protocol):
    def save(self, worker: WorkerRecord) -> None: ...

    def live(self) -> list[WorkerRecord]:
        """Workers not yet stopped, as a restarted gateway must adopt them."""
        ...

    def recent(self, endpoint: str | None, limit: int = 50) -> list[dict[str, Any]]: ...


class LedgerRows(Protocol):
    def add(self, entry: LedgerEntry) -> None:
        """Add seconds and cost to the worker's row for that day (an unknown cost makes the row unknown)."""
        ...

    def spent(self, endpoint: str, day: str) -> float: ...

    def usage(self, days: int = 31) -> list[dict[str, Any]]: ...

    def worker_seconds(self, worker_id: str) -> float: ...

    def entries(self) -> list[LedgerEntry]:
        """Every row (what a replaced gateway's successor takes over)."""
        ...

    def restore(self, entries: list[LedgerEntry]) -> int:
        """Add the rows of workers and days this ledger lacks; rows it has are left as they are (so restoring
        twice counts once). Returns how many were added."""
        ...


class EndpointRows(Protocol):
    def put(self, name: str, endpoint: StoredEndpoint) -> None: ...

    def all(self) -> dict[str, StoredEndpoint]: ...

    def delete(self, name: str) -> None: ...


class GatewayStore(Protocol):
    """Everything the gateway keeps, behind one handle."""

    @property
    def jobs(self) -> JobRows: ...

    @property
    def workers(self) -> WorkerRows: ...

    @property
    def ledger(self) -> LedgerRows: ...

    @property
    def endpoints(self) -> EndpointRows: ...

    @property
    def history(self) -> HistoryRows: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...
