"""Jobs: the record and RunPod's status shape. Rows live behind :class:`gpuform.gateway.store.JobRows`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from gpuform.gateway.states import TERMINAL, JobStatus


@dataclass(slots=True, eq=False)
class Job:
    id: str
    endpoint: str
    input: Any
    created_at: float
    execution_timeout: float
    ttl: float
    status: JobStatus = JobStatus.IN_QUEUE
    webhook: str | None = None
    sync: bool = False
    low_priority: bool = False
    started_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    retried: int = 0
    worker_id: str | None = None
    idempotency_key: str | None = None
    owner: str | None = None  # the name of the key that submitted it (None: before owners were recorded)
    output: Any = None
    error: Any = None
    expires_at: float | None = None
    lease_until: float = 0.0
    progress: Any = None
    chunks: list[Any] = field(default_factory=list)
    drained: int = 0
    size: int = 0  # bytes of the stored result (output and error)
    input_size: int = 0  # bytes of the input held in memory (0: none, or it waits in the store)
    input_stored: bool = False  # the input is not in memory: read it from the store when a worker takes the job
    chunk_bytes: int = 0
    chunks_dropped: int = 0
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
        """Queue time: until a worker took the job, or until it ended untaken (then it stops growing)."""
        end = self.started_at if self.started_at is not None else self.completed_at
        end = end if end is not None else (now or time.time())
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
        if self.status == JobStatus.IN_PROGRESS and self.progress is not None:
            out["output"] = self.progress
        elif self.output is not None or self.status == JobStatus.COMPLETED:
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
