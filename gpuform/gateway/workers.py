"""Workers as the gateway knows them: state, token, timeline, jobs held, and their rows in the store.

States: initializing (asked to start, not yet heard from), idle, running (holds jobs), stopping, unhealthy
(crashed or never became ready). A worker becomes ready at its first job-take or heartbeat.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from gpuform.gateway.autoscaler import IDLE, INITIALIZING, LIVE, RUNNING, STOPPING, UNHEALTHY, WorkerView
from gpuform.gateway.db import Database
from gpuform.provider import WorkerInfo


@dataclass
class WorkerRecord:
    id: str
    endpoint: str
    pool: str
    revision: str
    token_hash: str
    requested_at: float
    state: str = INITIALIZING
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

    def view(self) -> WorkerView:
        return WorkerView(self.id, self.state, self.idle_since, self.stale)

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


class WorkerTable:
    """Persistence of worker records (so a restarted gateway knows its workers and their tokens)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, w: WorkerRecord) -> None:
        self.db.execute(
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
        rows = self.db.execute("SELECT * FROM workers WHERE state IN (?,?,?,?)",
                               (INITIALIZING, IDLE, RUNNING, STOPPING)).fetchall()
        out = []
        for r in rows:
            w = WorkerRecord(id=r["id"], endpoint=r["endpoint"], pool=r["pool"], revision=r["spec_revision"] or "",
                             token_hash=r["token_hash"], requested_at=r["requested_at"], state=r["state"],
                             host=r["host"] or "", gpu_type=r["gpu_type"] or "", gpus=r["gpus"], price=r["price"],
                             ready_at=r["ready_at"], first_job_at=r["first_job_at"], last_seen=r["last_seen"],
                             timeline=json.loads(r["timeline"] or "{}"))
            w.billed_until = time.time()
            if w.host:  # enough for the provider to find, stop and observe it again
                w.info = WorkerInfo(w.id, w.endpoint, w.host, "running", w.gpu_type or "cpu")
            if w.state == RUNNING:
                w.state, w.idle_since = IDLE, time.time()
            out.append(w)
        return out

    def recent(self, endpoint: str | None, limit: int = 50) -> list[dict[str, Any]]:
        sql = "SELECT * FROM workers" + (" WHERE endpoint=?" if endpoint else "") + \
              " ORDER BY requested_at DESC LIMIT ?"
        params: tuple[Any, ...] = (endpoint, limit) if endpoint else (limit,)
        return [dict(r) for r in self.db.execute(sql, params).fetchall()]


__all__ = ["IDLE", "INITIALIZING", "RUNNING", "STOPPING", "UNHEALTHY", "WorkerRecord", "WorkerTable", "new_token"]
