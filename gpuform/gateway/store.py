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

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...
