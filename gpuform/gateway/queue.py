"""The durable job queue: submit, long-poll take with leases, results, cancel/retry/purge, timeouts.

Every state change is committed to SQLite before the caller is answered, so a job id the gateway has
handed out survives the gateway being killed. In memory the queue keeps only open jobs (queued and
running) plus a small cache of recently finished ones. A job is leased to the worker that took it; the
lease is renewed by that worker's heartbeats and posts, and a lapsed lease puts the job back in the queue
(up to ``max_job_attempts`` hand-outs, then it fails with the reason).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gpuform.config.schema import GatewayTimings
from gpuform.gateway.jobs import Job
from gpuform.gateway.states import JobStatus
from gpuform.gateway.store import JobRows

SWEEP_BATCH = 1000


@dataclass(frozen=True)
class MemoryBudget:
    """What the queue keeps in memory, by bytes (the store holds everything; memory is a cache)."""

    results: int = 64 << 20  # finished jobs kept for fast /status and /stream
    result_items: int = 2_000  # and at most this many of them (each is walked by the garbage collector)
    result_item: int = 1 << 20  # a bigger result is served from the store
    inputs: int = 256 << 20  # inputs of open jobs held in memory; beyond it they wait in the store
    input_item: int = 64 << 10  # a bigger input always waits in the store
    stream_job: int = 16 << 20  # stream chunks held for one job (more are refused)
    stream_total: int = 256 << 20  # stream chunks held for all jobs


class ResultCache:
    """Recently finished jobs, least recently used out first, bounded by bytes and by count."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.bytes = 0

    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is not None:
            self.jobs.move_to_end(job_id)
        return job

    def put(self, job: Job) -> list[Job]:
        """Keep ``job`` (unless its result is too big); return the jobs evicted to make room."""
        self.pop(job.id)
        if job.size > self.budget.result_item:
            return []
        self.jobs[job.id] = job
        self.bytes += job.size
        evicted = []
        while self.jobs and (self.bytes > self.budget.results or len(self.jobs) > self.budget.result_items):
            _, old = self.jobs.popitem(last=False)
            self.bytes -= old.size
            evicted.append(old)
        return evicted

    def pop(self, job_id: str) -> Job | None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            self.bytes -= job.size
        return job

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs

    def __len__(self) -> int:
        return len(self.jobs)


class QueueFull(Exception):
    """A job is refused for now: its endpoint's queue, or its key's quota, is full (429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Quota:
    """What one key may hold in the queues (None: no limit)."""

    max_open: int | None = None  # queued or running
    max_queued: int | None = None


@dataclass(eq=False)
class _Taker:
    """A worker's long-poll waiting for work, and whether that worker may still take any."""

    future: asyncio.Future[None]
    eligible: Callable[[], bool]


@dataclass(frozen=True)
class QueueStats:
    queued: int
    running: int
    oldest_wait: float
    scalable_queued: int  # queued jobs that may trigger scale-up (not low priority)
    woke_at: float = 0.0  # when a job last arrived while the endpoint had none queued or running


Listener = Callable[[Job], None]


async def _wait_event(events: dict[str, asyncio.Event], key: str, timeout: float) -> None:
    """Wait until ``events[key]`` (a new event, set by whoever finds it there) is set, or ``timeout`` passes."""
    event = events[key] = asyncio.Event()
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout)
    except TimeoutError:
        pass
    finally:
        if events.get(key) is event:
            del events[key]


class JobQueue:
    records_finish = False  # True: ending a job also writes its key usage and request-history rows (shared queue)

    def __init__(self, store: JobRows, timings: GatewayTimings, clock: Callable[[], float] = time.time,
                 budget: MemoryBudget | None = None) -> None:
        self.store = store
        self.timings = timings
        self.clock = clock
        self.budget = budget or MemoryBudget()
        self.queued: dict[str, OrderedDict[str, Job]] = {}
        self.running: dict[str, dict[str, Job]] = {}
        self.woke_at: dict[str, float] = {}  # endpoint -> last arrival into an empty endpoint (idle gaps end)
        self.recent = ResultCache(self.budget)
        self.input_bytes = 0  # inputs of open jobs held in memory
        self.open_by: dict[str, int] = {}  # owner -> jobs queued or running
        self.queued_by: dict[str, int] = {}  # owner -> jobs queued
        self.stream_bytes = 0  # stream chunks held in memory
        self.takers: dict[str, deque[_Taker]] = {}
        self.stops: dict[str, set[str]] = {}
        self.controls: dict[str, str] = {}
        self.stop_events: dict[str, asyncio.Event] = {}
        self.slot_freed: dict[str, asyncio.Event] = {}  # worker -> its held take, woken when one of its jobs ends
        self.polling: dict[str, int] = {}  # worker -> its takes waiting here
        self.handed: dict[str, asyncio.Event] = {}  # worker -> set when a take hands it jobs
        self.requeued: dict[str, int] = {}
        self.on_started: list[Listener] = []
        self.on_finished: list[Listener] = []
        self.on_stop_worker: list[Callable[[str, str], None]] = []
        self.on_unserved: list[Callable[[str], None]] = []  # a job arrived and no worker was waiting
        self.on_sweep: list[Callable[[float], Any]] = []  # other retention work, at each sweep with its time
        self.condition_of: Callable[[str], str] = lambda endpoint: ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closing = False
        self._closed: asyncio.Event | None = None

    # ---- restore after a restart ------------------------------------------------------------------

    def restore(self) -> int:
        """Load open jobs from the store; running ones keep their worker and get a fresh lease."""
        now = self.clock()
        jobs = self.store.open_jobs()
        for job in jobs:
            self._count(self.open_by, job, 1)
            if job.status == JobStatus.IN_QUEUE:
                self._enqueue(job)
            else:
                job.lease_until = now + self.timings.lease_timeout
                self._running(job.endpoint)[job.id] = job
        return len(jobs)

    @staticmethod
    def _count(table: dict[str, int], job: Job, delta: int) -> None:
        owner = job.owner or ""
        left = table.get(owner, 0) + delta
        if left > 0:
            table[owner] = left
        else:
            table.pop(owner, None)

    def _enqueue(self, job: Job, first: bool = False) -> None:
        queue = self._queue(job.endpoint)
        queue[job.id] = job
        if first:
            queue.move_to_end(job.id, last=False)
        self._count(self.queued_by, job, 1)

    def _dequeue(self, job: Job) -> None:
        if self._queue(job.endpoint).pop(job.id, None) is not None:
            self._count(self.queued_by, job, -1)

    def _queue(self, endpoint: str) -> OrderedDict[str, Job]:
        return self.queued.setdefault(endpoint, OrderedDict())

    def _running(self, endpoint: str) -> dict[str, Job]:
        return self.running.setdefault(endpoint, {})

    # ---- client side ------------------------------------------------------------------------------

    def submit(self, endpoint: str, payload: Any, *, sync: bool = False, webhook: str | None = None,
               execution_timeout: float, ttl: float, low_priority: bool = False, idempotency_key: str | None = None,
               max_queue: int | None = None, owner: str | None = None, quota: Quota | None = None
               ) -> tuple[Job, bool]:
        """Queue a job for ``owner``; return it and whether it is new (the owner's Idempotency-Key may return
        its first one). Raises QueueFull when the endpoint's queue or the owner's quota is full."""
        if idempotency_key:
            first = self.store.by_idempotency(endpoint, owner, idempotency_key)
            if first is not None:
                return self.get(first.id) or first, False
        self._admit(endpoint, owner or "", max_queue, quota or Quota())
        job_id = ("sync-" if sync else "") + str(uuid.uuid4())
        job = Job(id=job_id, endpoint=endpoint, input=payload, created_at=self.clock(), sync=sync, webhook=webhook,
                  execution_timeout=execution_timeout, ttl=ttl, low_priority=low_priority,
                  idempotency_key=idempotency_key, owner=owner)
        size = self.store.insert(job)
        self._hold_input(job, size)
        if not self._queue(endpoint) and not self._running(endpoint):
            self.woke_at[endpoint] = job.created_at
        self._count(self.open_by, job, 1)
        self._enqueue(job)
        self._dispatch(endpoint)
        return job, True

    def _admit(self, endpoint: str, owner: str, max_queue: int | None, quota: Quota) -> None:
        retry = max(1, round(self.timings.reconcile_interval * 5))
        if max_queue is not None and len(self._queue(endpoint)) >= max_queue:
            raise QueueFull(f"endpoint {endpoint} has {max_queue} jobs queued, its max_queue", retry)
        if quota.max_queued is not None and self.queued_by.get(owner, 0) >= quota.max_queued:
            raise QueueFull(f"API key {owner!r} has {quota.max_queued} jobs queued, its max_queued", retry)
        if quota.max_open is not None and self.open_by.get(owner, 0) >= quota.max_open:
            raise QueueFull(f"API key {owner!r} has {quota.max_open} jobs queued or running, its max_open_jobs",
                            retry)

    def _hold_input(self, job: Job, size: int) -> None:
        """Keep a small input in memory while its job is open; a big one (or any, past the budget) waits in
        the store and is read back when a worker takes the job."""
        if size > self.budget.input_item or self.input_bytes + size > self.budget.inputs:
            job.input, job.input_stored = None, True
        else:
            job.input_size = size
            self.input_bytes += size

    def _release_input(self, job: Job) -> None:
        self.input_bytes -= job.input_size
        job.input_size = 0

    def _dispatch(self, endpoint: str) -> None:
        """Hand the queue's head to a waiting worker, or say that none is waiting (scale from zero now)."""
        if not self._wake(endpoint):
            for listener in self.on_unserved:
                listener(endpoint)

    def get(self, job_id: str) -> Job | None:
        for table in (*self.queued.values(), *self.running.values()):
            if job_id in table:
                return table[job_id]
        cached = self.recent.get(job_id)
        if cached is not None:
            return cached
        job = self.store.get(job_id)
        if job is not None and job.terminal:
            self._remember(job)
        return job

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is None or job.terminal:
            return job
        if job.status == JobStatus.IN_PROGRESS:
            self._signal_stop(job)
        self._finish(job, JobStatus.CANCELLED, error="cancelled by request")
        return job

    def retry(self, job_id: str) -> Job | None:
        """Put a FAILED or TIMED_OUT job back in the queue under the same id."""
        job = self.get(job_id)
        if job is None or job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            return job
        self.recent.pop(job.id)
        self._drop_chunks(job)
        job.status, job.output, job.error, job.progress = JobStatus.IN_QUEUE, None, None, None
        job.started_at = job.completed_at = job.expires_at = None
        job.worker_id, job.retried, job.attempts = None, job.retried + 1, 0
        job.input, job.input_stored = None, True  # read back from the store when a worker takes it
        job.created_at = self.clock()
        job._done = None
        self.store.requeued(job)
        self._count(self.open_by, job, 1)
        self._enqueue(job)
        self._wake(job.endpoint)
        return job

    def purge(self, endpoint: str, owner: str | None = None) -> int:
        """Cancel the endpoint's queued jobs (only ``owner``'s, when given)."""
        jobs = [j for j in self._queue(endpoint).values() if owner is None or j.owner in (None, owner)]
        for job in jobs:
            self._finish(job, JobStatus.CANCELLED, error="removed by purge-queue")
        return len(jobs)

    def drain_chunks(self, job: Job) -> list[Any]:
        """Chunks produced since the previous call (RunPod's /stream semantics)."""
        fresh = job.chunks[job.drained:]
        job.drained = len(job.chunks)
        return fresh

    async def follow(self, job: Job, keepalive: float) -> AsyncGenerator[list[Any] | None]:
        """A job's stream as it grows: its new chunks each time it changes (possibly none), None after
        ``keepalive`` seconds without a change; it ends after the chunks of a finished job."""
        sent = 0
        while True:
            event = job.chunk_event()
            event.clear()
            fresh = job.chunks[sent:]
            sent = len(job.chunks)
            yield fresh
            if job.terminal:
                return
            try:
                await asyncio.wait_for(event.wait(), timeout=keepalive)
            except TimeoutError:
                yield None

    def stats(self, endpoint: str) -> QueueStats:
        queue = self._queue(endpoint)
        now = self.clock()
        oldest = next(iter(queue.values()), None)
        scalable = sum(1 for j in queue.values() if not j.low_priority)
        wait = now - oldest.created_at if oldest else 0.0
        return QueueStats(len(queue), len(self._running(endpoint)), wait, scalable, self.woke_at.get(endpoint, 0.0))

    # ---- worker side -------------------------------------------------------------------------------

    def close(self) -> None:
        """Shutting down: answer every waiting long-poll now (takes get nothing, stop polls return)."""
        self.closing = True
        for takers in self.takers.values():
            while takers:
                taker = takers.popleft()
                if not taker.future.done():
                    taker.future.set_result(None)
        for event in self.stop_events.values():
            event.set()
        self.closed_event().set()

    def closed_event(self) -> asyncio.Event:
        if self._closed is None:
            self._closed = asyncio.Event()
        return self._closed

    async def wait_done(self, job: Job, timeout: float) -> bool:
        """Wait until ``job`` is finished (True), ``timeout`` passes or the gateway shuts down (False)."""
        if job.terminal:
            return True
        done = asyncio.ensure_future(job.done_event().wait())
        closed = asyncio.ensure_future(self.closed_event().wait())
        try:
            await asyncio.wait([done, closed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            closed.cancel()
        return job.terminal

    async def take(self, endpoint: str, worker_id: str, count: int, timeout: float,
                   disconnected: Callable[[], Awaitable[bool]] | None = None,
                   eligible: Callable[[], bool] = lambda: True, limit: int | None = None) -> list[Job]:
        """Long-poll: up to ``count`` jobs for ``worker_id``, or [] after ``timeout`` seconds (or as soon as
        the worker is no longer ``eligible``: put to sleep, replaced, stopping). With ``limit`` the worker holds
        at most that many jobs at once: a take beyond it waits until one of its jobs ends."""
        self.polling[worker_id] = self.polling.get(worker_id, 0) + 1
        try:
            return await self._take(endpoint, worker_id, count, timeout, disconnected, eligible, limit)
        finally:
            self.polling[worker_id] -= 1
            if not self.polling[worker_id]:
                del self.polling[worker_id]

    async def _take(self, endpoint: str, worker_id: str, count: int, timeout: float,
                    disconnected: Callable[[], Awaitable[bool]] | None, eligible: Callable[[], bool],
                    limit: int | None) -> list[Job]:
        deadline = time.monotonic() + timeout
        woken = False  # the last wait ended because a job arrived
        while not self.closing and eligible():
            room = count if limit is None else min(count, limit - self.held(endpoint, worker_id))
            jobs = self._pop(endpoint, worker_id, room) if room > 0 else []
            if jobs:
                return jobs
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if room > 0:
                woken = await self._wait_for_work(endpoint, eligible, min(remaining, 1.0))
            else:
                woken = False
                await self._wait_for_slot(worker_id, min(remaining, 1.0))
            if disconnected is not None and await disconnected():
                break
        if woken and not self.closing and self._queue(endpoint):
            self._dispatch(endpoint)  # woken for a job this worker will not take: pass it on
        return []

    async def next_handed(self, worker_id: str, timeout: float) -> None:
        """When ``worker_id`` has a take waiting here, wait until that take hands it a job (or ``timeout``)."""
        if not self.polling.get(worker_id):
            return
        await _wait_event(self.handed, worker_id, timeout)

    def held(self, endpoint: str, worker_id: str) -> int:
        """How many of the endpoint's running jobs ``worker_id`` holds."""
        return sum(1 for job in self._running(endpoint).values() if job.worker_id == worker_id)

    async def _wait_for_work(self, endpoint: str, eligible: Callable[[], bool], timeout: float) -> bool:
        """Wait as one of the endpoint's takers; True when a job's arrival woke this one."""
        taker = _Taker(asyncio.get_running_loop().create_future(), eligible)
        takers = self.takers.setdefault(endpoint, deque())
        takers.append(taker)
        try:
            await asyncio.wait_for(taker.future, timeout=timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if taker in takers:
                takers.remove(taker)

    async def _wait_for_slot(self, worker_id: str, timeout: float) -> None:
        """Wait until one of ``worker_id``'s jobs ends (finished, requeued) or ``timeout`` passes."""
        await _wait_event(self.slot_freed, worker_id, timeout)

    def _freed(self, job: Job) -> None:
        """``job`` no longer holds a slot of its worker: a take held for that slot goes on."""
        event = self.slot_freed.get(job.worker_id or "")
        if event is not None:
            event.set()

    def _wake(self, endpoint: str) -> bool:
        """Wake one waiting taker that may still take work; False when none is waiting."""
        takers = self.takers.get(endpoint)
        while takers:
            taker = takers.popleft()
            if taker.future.done():
                continue
            taker.future.set_result(None)  # an ineligible one returns at once; the next may take the job
            if taker.eligible():
                return True
        return False

    def _pop(self, endpoint: str, worker_id: str, count: int) -> list[Job]:
        queue = self._queue(endpoint)
        if not queue:
            return []
        now = self.clock()
        taken: list[Job] = []
        while queue and len(taken) < count:
            _, job = queue.popitem(last=False)
            self._count(self.queued_by, job, -1)
            if job.input_stored:
                job.input = self.store.input_of(job.id)
            job.status, job.started_at, job.worker_id = JobStatus.IN_PROGRESS, now, worker_id
            job.attempts += 1
            job.lease_until = now + self.timings.lease_timeout
            self._running(endpoint)[job.id] = job
            taken.append(job)
        self.store.started(taken)
        handed = self.handed.get(worker_id)
        if handed is not None and taken:
            handed.set()
        for job in taken:
            for listener in self.on_started:
                listener(job)
        return taken

    def _owned(self, job_id: str, worker_id: str) -> Job | None:
        job = self.get(job_id)
        if job is None or job.status != JobStatus.IN_PROGRESS or job.worker_id != worker_id:
            return None
        job.lease_until = self.clock() + self.timings.lease_timeout
        return job

    def result(self, job_id: str, worker_id: str, body: dict[str, Any]) -> Job | None:
        """A worker's post to job-done: a progress update, or the final result (error → FAILED)."""
        job = self._owned(job_id, worker_id)
        if job is None:
            return None  # a late post for a job that finished, was cancelled or was handed to another worker
        if body.get("status") == JobStatus.IN_PROGRESS:
            job.progress = body.get("output")
            job.notify_chunk()
            return job
        error = body.get("error")
        if error:
            self._finish(job, JobStatus.FAILED, output=body.get("output"), error=error)
        else:
            self._finish(job, JobStatus.COMPLETED, output=body.get("output"))
        if body.get("stopPod"):
            for listener in self.on_stop_worker:
                listener(worker_id, "the handler asked for a fresh worker (refresh_worker)")
        return job

    def chunk(self, job_id: str, worker_id: str, output: Any, size: int = 0) -> Job | None:
        """A stream chunk; None when the job is not this worker's, or its stream is over its memory budget."""
        job = self._owned(job_id, worker_id)
        if job is None:
            return None
        if job.chunk_bytes + size > self.budget.stream_job or self.stream_bytes + size > self.budget.stream_total:
            job.chunks_dropped += 1
            return None
        job.chunks.append(output)
        job.chunk_bytes += size
        self.stream_bytes += size
        job.notify_chunk()
        return job

    def _drop_chunks(self, job: Job) -> None:
        self.stream_bytes -= job.chunk_bytes
        job.chunks, job.drained, job.chunk_bytes = [], 0, 0

    def renew(self, worker_id: str, job_ids: list[str]) -> None:
        """A heartbeat: the worker still holds these jobs. Ones stopped meanwhile are signalled again
        (the worker may have missed the first signal, e.g. while the job was still in its own queue)."""
        for job_id in job_ids:
            if self._owned(job_id, worker_id) is None:
                job = self.get(job_id)
                stopped = job is not None and job.status in (JobStatus.CANCELLED, JobStatus.TIMED_OUT)
                if stopped and job is not None and job.worker_id == worker_id:
                    self._signal_stop(job)

    def running_jobs(self) -> list[Job]:
        """Every job a worker is running."""
        return [j for table in self.running.values() for j in table.values()]

    def dispose(self) -> None:
        """The gateway stops: release what the queue holds besides its store (nothing, here)."""

    def jobs_of(self, worker_id: str) -> list[Job]:
        return [j for table in self.running.values() for j in table.values() if j.worker_id == worker_id]

    def worker_lost(self, worker_id: str, reason: str) -> list[Job]:
        """Requeue (or fail, after too many attempts) every job the worker held."""
        jobs = self.jobs_of(worker_id)
        for job in jobs:
            self._requeue_or_fail(job, reason)
        return jobs

    def _requeue_or_fail(self, job: Job, reason: str) -> None:
        if job.attempts >= self.timings.max_job_attempts:
            self._finish(job, JobStatus.FAILED, error={"error_type": "WorkerLost", "error_message":
                                             f"{reason}; gave up after {job.attempts} attempts"})
            return
        self._running(job.endpoint).pop(job.id, None)
        self._freed(job)
        job.status, job.started_at, job.worker_id, job.progress = JobStatus.IN_QUEUE, None, None, None
        self._drop_chunks(job)
        self.store.requeued(job)
        self._enqueue(job, first=True)  # it was submitted before anything queued now
        self.requeued[job.endpoint] = self.requeued.get(job.endpoint, 0) + 1
        self._wake(job.endpoint)

    # ---- stop channel ------------------------------------------------------------------------------

    def _signal_stop(self, job: Job) -> None:
        if job.worker_id is None:
            return
        self.stops.setdefault(job.worker_id, set()).add(job.id)
        self.stop_events.setdefault(job.worker_id, asyncio.Event()).set()

    def control(self, worker_id: str, command: str) -> None:
        """A command for the worker (``sleep``/``wake``), delivered on its stop channel."""
        self.controls[worker_id] = command
        self.stop_events.setdefault(worker_id, asyncio.Event()).set()

    def take_control(self, worker_id: str) -> str | None:
        return self.controls.pop(worker_id, None)

    def release(self, worker_id: str) -> None:
        """Answer the worker's pending stop poll now (it is being stopped)."""
        self.stop_events.setdefault(worker_id, asyncio.Event()).set()

    async def wait_stops(self, worker_id: str, timeout: float) -> list[str]:
        event = self.stop_events.setdefault(worker_id, asyncio.Event())
        if not self.stops.get(worker_id) and worker_id not in self.controls and not self.closing and timeout > 0:
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return []
        event.clear()
        return sorted(self.stops.pop(worker_id, set()))

    # ---- finishing and timers ----------------------------------------------------------------------

    def _finish(self, job: Job, status: JobStatus, output: Any = None, error: Any = None) -> None:
        """End ``job``: stored first; if the store refuses (a full disk), the job is left as it was."""
        now = self.clock()
        before = (job.status, job.output, job.error, job.completed_at, job.expires_at)
        retention = self.timings.result_retention_sync if job.sync else self.timings.result_retention_run
        job.status, job.output, job.error, job.completed_at = status, output, error, now
        job.expires_at = now + retention
        try:
            job.size = self.store.finished(job)
        except BaseException:
            job.status, job.output, job.error, job.completed_at, job.expires_at = before
            raise
        if self._running(job.endpoint).pop(job.id, None) is not None:
            self._freed(job)
        self._dequeue(job)
        self._count(self.open_by, job, -1)
        self._release_input(job)
        job.input = None if job.input_stored else job.input
        self._remember(job)
        job.finish()
        for listener in self.on_finished:
            listener(job)

    def _remember(self, job: Job) -> None:
        for old in self.recent.put(job):
            self._drop_chunks(old)

    def sweep(self) -> None:
        """Lapsed leases, execution timeouts, TTLs and result retention; call about once a second."""
        now = self.clock()
        for table in list(self.running.values()):
            for job in list(table.values()):
                if job.started_at is not None and now - job.started_at > job.execution_timeout:
                    self._signal_stop(job)
                    worker = job.worker_id or ""
                    self._finish(job, JobStatus.TIMED_OUT,
                                 error=f"execution timeout of {job.execution_timeout:g}s exceeded")
                    for listener in self.on_stop_worker:
                        listener(worker, f"job {job.id} exceeded its execution timeout")
                elif job.lease_until < now:
                    self._requeue_or_fail(job, f"worker {job.worker_id} stopped sending heartbeats")
        self._expire_ttl(now)
        self._expire_results(now)
        for also in self.on_sweep:
            also(now)

    def _expire_results(self, now: float) -> None:
        """Delete results past retention, in batches until none is left (keeps up with any job rate)."""
        while True:
            gone = self.store.expired(now, SWEEP_BATCH)
            if gone:
                self.store.delete(gone)
                for job_id in gone:
                    old = self.recent.pop(job_id)
                    if old is not None:
                        self._drop_chunks(old)
            if len(gone) < SWEEP_BATCH:
                return

    def _expire_ttl(self, now: float) -> None:
        """Open jobs past their ttl end TIMED_OUT (kept for the retention period, with the reason)."""
        for job_id in self.store.ttl_expired(now, SWEEP_BATCH):
            job = self.get(job_id)
            if job is None or job.terminal:
                continue
            if job.status == JobStatus.IN_PROGRESS:
                self._signal_stop(job)
            why = self.condition_of(job.endpoint)
            self._finish(job, JobStatus.TIMED_OUT, error="the job's ttl expired" + (f" while {why}" if why else ""))

    def fail_endpoint(self, endpoint: str, reason: str) -> int:
        """Fail every open job of an endpoint that is being removed or replaced."""
        jobs = list(self._queue(endpoint).values()) + list(self._running(endpoint).values())
        for job in jobs:
            if job.status == JobStatus.IN_PROGRESS:
                self._signal_stop(job)
            self._finish(job, JobStatus.FAILED, error=reason)
        return len(jobs)
