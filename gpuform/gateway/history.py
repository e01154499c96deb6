"""The request history: one compact row per finished request (arrival, delay, execution, status, worker,
endpoint and key; never the input or output), kept for ``timings.request_history`` whatever the result's own
retention, so ``gpuform requests``, the console and ``gpuform simulate`` can read past traffic.

Recording is best effort: a store failure while recording is logged and the job's own flow (its result, its
webhook) goes on. On the queue shared by replicas the row is written by the job's finish statement itself
(:meth:`gpuform.gateway.pgqueue.PgQueue.finish`), which saves a round trip and fails only with it.
Pruning runs from the queue's sweep, at most once a minute, in batches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gpuform.config.types import parse_duration
from gpuform.errors import StoreError
from gpuform.gateway.jobs import Job
from gpuform.gateway.logs import job_fields
from gpuform.gateway.states import TERMINAL, JobStatus
from gpuform.gateway.store import HistoryEntry, HistoryQuery, HistoryRows

log = logging.getLogger("gpuform.gateway")
PRUNE_EVERY = 60.0
PRUNE_BATCH = 5000
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
SINCE_HINT = "write a duration back from now (30m, 1h, 2d), an ISO 8601 time (2026-01-05T09:00:00Z) or epoch seconds"


class RequestHistory:
    def __init__(self, rows: HistoryRows, retention: float, clock: Callable[[], float]) -> None:
        self.rows = rows
        self.retention = retention
        self.clock = clock
        self.pruned_at: float | None = None

    def record(self, job: Job) -> None:
        """Add a finished job's row; a store failure is logged, never raised."""
        try:
            self.rows.add(HistoryEntry.of(job))
        except StoreError as exc:
            log.warning("request history: job %s not recorded: %s", job.id, exc.message, extra=job_fields(job))

    def prune(self, now: float) -> int:
        """Delete rows past retention (at most once every PRUNE_EVERY seconds); return how many."""
        if self.pruned_at is not None and now - self.pruned_at < PRUNE_EVERY:
            return 0
        self.pruned_at = now
        total = 0
        while True:
            gone = self.rows.prune(now - self.retention, PRUNE_BATCH)
            total += gone
            if gone < PRUNE_BATCH:
                return total

    def query(self, query: HistoryQuery) -> list[HistoryEntry]:
        return self.rows.query(query)


def entry_json(e: HistoryEntry) -> dict[str, Any]:
    """An entry as the API answers it: epoch seconds, and delay and execution in seconds."""
    return {"id": e.job_id, "endpoint": e.endpoint, "owner": e.owner, "status": str(e.status),
            "worker_id": e.worker_id, "created_at": e.created_at, "started_at": e.started_at,
            "completed_at": e.completed_at, "delay": e.delay, "execution": e.execution}


class BadQuery(ValueError):
    """A query value that cannot be read; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def parse_statuses(text: str | None) -> frozenset[JobStatus]:
    """``COMPLETED`` or ``failed,timed_out`` (any case); empty or None means every status."""
    if not text or not text.strip():
        return frozenset()
    found = set()
    for part in text.split(","):
        name = part.strip().upper()
        if name not in {str(s) for s in TERMINAL}:
            allowed = ", ".join(sorted(str(s) for s in TERMINAL))
            raise BadQuery("status", f"status {part.strip()!r} is not a finished request's status; use one or "
                                     f"more of {allowed}, separated by commas")
        found.add(JobStatus(name))
    return frozenset(found)


def parse_since(text: str | None, now: float, param: str = "since") -> float | None:
    """Epoch seconds from a duration back from ``now`` (``1h``, ``30m``, ``2d``), an ISO 8601 time (naive
    means UTC) or epoch seconds; None for none."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = _time_or_duration(text, now, param)
    if not math.isfinite(value):
        raise BadQuery(param, f"{param} {text!r} is not a finite time; {SINCE_HINT}")
    return value


def _time_or_duration(text: str, now: float, param: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        pass
    try:
        return now - float(parse_duration(text))
    except ValueError:
        raise BadQuery(param, f"{param} {text!r} is neither a duration nor a time; {SINCE_HINT}") from None


def parse_limit(text: str | None) -> int:
    """A positive whole number, capped at MAX_LIMIT (DEFAULT_LIMIT when absent)."""
    if text is None or not text.strip():
        return DEFAULT_LIMIT
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise BadQuery("limit", f"limit {text!r} is not a whole number ≥ 1; the most one answer holds is "
                                f"{MAX_LIMIT}")
    return min(value, MAX_LIMIT)
