"""What gateway replicas share of their workers: the rows (PostgreSQL), and how one replica's copy of a worker
takes what the others recorded (:func:`absorb`).

Every replica keeps workers in memory (:class:`~gpuform.gateway.fleet.Fleet`). The leader starts, sleeps,
wakes and stops them; any replica records what a worker tells it (its contacts, that it is ready, its phases),
and the jobs in the store say whether it runs one and since when it idles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gpuform.gateway.states import WorkerState
from gpuform.gateway.store import StoredEndpoint
from gpuform.gateway.workers import WorkerRecord

SYNC_EVERY = 1.0  # a worker's copy is re-read from the store at most this often; its contacts written as often
FOLLOWED = frozenset({WorkerState.INITIALIZING, WorkerState.IDLE, WorkerState.RUNNING})  # states any replica sets


class SharedWorkerRows(Protocol):
    """Worker rows that gateway replicas share (:class:`gpuform.gateway.postgres.PostgresWorkers`)."""

    def insert_fenced(self, w: WorkerRecord, epoch: int) -> None: ...

    def by_token(self, token_hash: str) -> WorkerRecord | None: ...

    def current(self) -> list[WorkerRecord]: ...

    def touch(self, worker_id: str, at: float) -> None: ...


class SharedEndpointRows(Protocol):
    """Endpoint rows that replicas share (:class:`gpuform.gateway.postgres.PostgresEndpoints`)."""

    def revisions(self) -> dict[str, tuple[str, bool]]:
        """Every stored endpoint's revision and whether a replica is removing it, by name."""
        ...

    def get(self, name: str) -> StoredEndpoint | None: ...

    def mark_deleting(self, name: str) -> None:
        """Every replica stops taking work for the endpoint (it is being removed)."""
        ...


@dataclass(frozen=True)
class Sharing:
    """How a replica's fleet shares workers with the others: their rows, and the epoch of its leadership
    (every new worker's row is inserted fenced by it); and the endpoint rows every replica takes changes from
    (gateway/shared_state.py)."""

    rows: SharedWorkerRows
    epoch: Callable[[], int]
    endpoints: SharedEndpointRows | None = None


def absorb(mine: WorkerRecord, row: WorkerRecord, starting: bool, now: float) -> None:
    """Merge a worker's row into this fleet's copy: first records (ready, first job, start) and the latest
    contact win; the row's state wins among the states any replica sets (initializing, idle, running)
    unless this replica holds the worker's jobs or is waking it, and a state only the leader sets (sleeping,
    stopping, stopped) is taken as it is."""
    if row.last_seen is not None and (mine.last_seen or 0.0) < row.last_seen:
        mine.last_seen = row.last_seen
    mine.ready_at = mine.ready_at or row.ready_at
    mine.first_job_at = mine.first_job_at or row.first_job_at
    for phase, at in row.timeline.items():
        mine.timeline.setdefault(phase, at)
    if mine.info is None and row.info is not None:
        mine.info, mine.host, mine.gpu_type = row.info, row.host, row.gpu_type
        mine.gpus, mine.price = row.gpus, row.price
    if row.billed_until is not None and (mine.billed_until or 0.0) < row.billed_until:
        mine.billed_until = row.billed_until
    _absorb_state(mine, row, starting, now)


def _absorb_state(mine: WorkerRecord, row: WorkerRecord, starting: bool, now: float) -> None:
    if mine.waking and _woke(mine, row):  # it told another replica it is awake
        mine.waking = False
        mine.state = row.state if row.state != WorkerState.INITIALIZING else WorkerState.IDLE
        mine.idle_since = row.idle_since or now
    if mine.state in FOLLOWED and row.state in FOLLOWED:
        if not mine.jobs and not mine.waking and row.state != WorkerState.INITIALIZING:
            mine.state, mine.idle_since = row.state, row.idle_since
    elif row.state not in FOLLOWED and mine.state in FOLLOWED and not starting:
        mine.state, mine.idle_since, mine.asleep_since = row.state, None, row.asleep_since
        mine.stopped_at, mine.exit_reason = row.stopped_at, row.exit_reason or mine.exit_reason
    elif mine.state == WorkerState.SLEEPING and row.state == WorkerState.INITIALIZING:  # the leader woke it
        mine.state, mine.asleep_since = row.state, None


def _woke(mine: WorkerRecord, row: WorkerRecord) -> bool:
    """Whether a worker this replica is waking has woken, by what its row says (it served a job, or reported
    ``awake`` after the wake was asked for)."""
    asked = mine.timeline.get("wake_requested")
    awake = row.timeline.get("awake")
    return row.state in (WorkerState.IDLE, WorkerState.RUNNING) or (
        asked is not None and awake is not None and awake >= asked)
