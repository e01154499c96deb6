"""Workers as the gateway knows them: state, token, timeline and the jobs they hold.

Every state change goes through :meth:`WorkerRecord.move`, which enforces the state machine of
:mod:`gpuform.gateway.states` and keeps ``idle_since`` and ``asleep_since`` right. A worker becomes ready at
its first job-take or heartbeat. Rows live behind :class:`gpuform.gateway.store.WorkerRows`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from gpuform.gateway.autoscaler import WorkerView
from gpuform.gateway.states import LIVE, WorkerState, check_transition
from gpuform.provider import WorkerInfo


@dataclass
class WorkerRecord:
    id: str
    endpoint: str
    pool: str
    revision: str
    token_hash: str
    requested_at: float
    state: WorkerState = WorkerState.INITIALIZING
    host: str = ""
    gpu_type: str = ""
    gpus: int = 0
    price: float | None = None  # per second for the whole worker
    ready_at: float | None = None
    first_job_at: float | None = None
    stopped_at: float | None = None
    last_seen: float | None = None
    idle_since: float | None = None
    exit_reason: str = ""
    log_tail: str = ""
    stale: bool = False
    info: WorkerInfo | None = None
    jobs: set[str] = field(default_factory=set)
    timeline: dict[str, float] = field(default_factory=dict)
    billed_until: float | None = None
    waking: bool = False
    asleep_since: float | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def move(self, to: WorkerState, now: float, reason: str = "") -> None:
        """Change state (raises :class:`~gpuform.gateway.states.IllegalTransition` when not allowed)."""
        check_transition(self.id, self.state, to)
        self.state = to
        self.idle_since = now if to == WorkerState.IDLE else None
        self.asleep_since = now if to == WorkerState.SLEEPING else None
        if to in (WorkerState.STOPPED, WorkerState.UNHEALTHY):
            self.stopped_at = now
        if reason:
            self.exit_reason = reason

    def view(self) -> WorkerView:
        return WorkerView(self.id, self.state, self.idle_since, self.stale, self.asleep_since)

    def mark(self, phase: str, at: float | None = None) -> None:
        self.timeline.setdefault(phase, at if at is not None else time.time())

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "endpoint": self.endpoint, "pool": self.pool, "state": self.state, "host": self.host,
                "gpu_type": self.gpu_type, "gpus": self.gpus, "revision": self.revision, "stale": self.stale,
                "requested_at": self.requested_at, "ready_at": self.ready_at, "first_job_at": self.first_job_at,
                "stopped_at": self.stopped_at, "last_seen": self.last_seen, "jobs": sorted(self.jobs),
                "exit_reason": self.exit_reason, "log_tail": self.log_tail, "timeline": self.timeline}


def new_token() -> str:
    return "gpf_w_" + secrets.token_urlsafe(24)
