"""The job queue shared by gateway replicas: PostgreSQL holds every job's state, no replica keeps its own.

:class:`SharedJobQueue` is :class:`~gpuform.gateway.queue.JobQueue`'s interface over
:mod:`gpuform.gateway.pgqueue`: a submit on one replica is taken by a worker polling another (claimed with
``FOR UPDATE SKIP LOCKED``, so never twice); results, cancels and timeouts are conditional updates (a late post
for a job that is no longer the worker's changes nothing); stream chunks and stop/sleep/wake signals are rows,
so ``/stream`` and a worker's stop poll see them on any replica. Wake-ups cross replicas by LISTEN/NOTIFY
(:mod:`gpuform.gateway.pgnotify`); a waiter also looks again every ``recheck`` seconds, so a lost notification
costs latency only. What each replica keeps in memory is its own waiters.

:meth:`sweep` (lapsed leases, execution timeouts, ttl, result retention) is correct even if two replicas ran
it at once; the gateway runs it on the leader only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import fields
from typing import Any, TypeVar

from gpuform.config.schema import GatewayTimings
from gpuform.errors import StoreError
from gpuform.gateway.jobs import Job
from gpuform.gateway.pgnotify import Listener
from gpuform.gateway.pgqueue import Admission, Ending, PgQueue, Refused, channel_of
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.queue import SWEEP_BATCH, JobQueue, MemoryBudget, QueueFull, QueueStats, Quota
from gpuform.gateway.states import JobStatus

T = TypeVar("T")
RECHECK = 1.0  # a waiter looks at the database again after this long without a notification
SIGNAL_KEEP = 600.0  # stop signals no worker collected are deleted after this long
OPEN = "status IN ('IN_QUEUE', 'IN_PROGRESS')"
LOST = ("json_build_object('error_type', 'WorkerLost', 'error_message', {reason} || '; gave up after ' || "
        "attempts || ' attempts')::text")
_KEPT = {"chunks", "drained", "chunk_bytes", "_done", "_chunk"}
_COPIED = [f.name for f in fields(Job) if f.name not in _KEPT]


def adopt(job: Job, fresh: Job) -> None:
    """Bring ``job`` (a caller's copy) up to date with ``fresh`` from the database."""
    for name in _COPIED:
        setattr(job, name, getattr(fresh, name))
    if job.terminal:
        job.finish()


class SharedJobQueue(JobQueue):
    records_finish = True  # the finish statement writes the key usage and history rows (no extra round trips)

    def __init__(self, store: PostgresStore, timings: GatewayTimings, clock: Callable[[], float] = time.time,
                 budget: MemoryBudget | None = None, recheck: float = RECHECK) -> None:
        super().__init__(store.jobs, timings, clock, budget)
        self.origin = uuid.uuid4().hex[:12]
        self.pg = PgQueue(store.db, channel_of(store.db.schema), self.origin)
        self.url = store.db.url
        self.recheck = recheck
        self.waiters: dict[str, set[asyncio.Event]] = {}
        self.released: set[str] = set()
        self.unseen: str | None = None  # the job submitted last, while no job has ended since
        self.settled: dict[str, Job] = {}  # jobs this replica ended while a wait_done here waited for them
        self.listener: Listener | None = None
        self.held_after: dict[tuple[str, str], int] = {}  # (endpoint, worker): its jobs left after result()
        self.held_before: dict[str, int] = {}  # job id -> its worker's jobs before the last _end (it included)

    # ---- notifications ------------------------------------------------------------------------------

    def restore(self) -> int:
        """Start listening; running jobs get at least a fresh lease. Returns how many jobs are open."""
        self.listen()
        return self.pg.restore(self.clock() + self.timings.lease_timeout)

    def listen(self) -> None:
        if self.listener is None:
            self.loop = self.loop or asyncio.get_running_loop()
            self.listener = Listener(self.url, self.pg.channel, self.loop, self._delivered, self.wake_all)
            self.listener.start()

    def dispose(self) -> None:
        """Stop listening (a notification of no kind ends the listener's wait at once)."""
        if self.listener is not None:
            listener, self.listener = self.listener, None
            listener.stop(timeout=0)
            with suppress(StoreError):
                self.pg.notify_all(("bye",))
            listener.stop()

    def _delivered(self, payload: str) -> None:
        origin, kind, *args = payload.split("\t")
        if origin != self.origin:  # this replica woke its own waiters when it made the change
            self._event(kind, *args)

    def _event(self, kind: str, *args: str) -> None:
        if kind == "job":
            self._wake(args[0])
        elif kind == "done":
            self.unseen = None
            self._set(f"done:{args[0]}", f"chunk:{args[0]}")
            self._slot(args[1])
        elif kind == "chunk":
            self._set(f"chunk:{args[0]}")
        elif kind == "stop":
            self._set(f"stop:{args[0]}")
        elif kind == "release":
            if self.waiters.get(f"stop:{args[0]}"):
                self.released.add(args[0])
                self._set(f"stop:{args[0]}")
        elif kind == "slot":
            self._slot(args[0])

    def _set(self, *keys: str) -> None:
        for key in keys:
            for event in self.waiters.get(key, ()):
                event.set()

    def _slot(self, worker_id: str) -> None:
        event = self.slot_freed.get(worker_id)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """Every waiter looks again (after the listener reconnected: notifications may have been lost)."""
        self.unseen = None
        for events in self.waiters.values():
            for event in events:
                event.set()
        for event in self.slot_freed.values():
            event.set()
        for takers in self.takers.values():
            for taker in takers:
                if not taker.future.done():
                    taker.future.set_result(None)

    def _register(self, keys: Iterable[str]) -> tuple[asyncio.Event, list[str]]:
        event, keys = asyncio.Event(), list(keys)
        for key in keys:
            self.waiters.setdefault(key, set()).add(event)
        return event, keys

    def _unregister(self, event: asyncio.Event, keys: list[str]) -> None:
        for key in keys:
            events = self.waiters.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self.waiters[key]

    async def _until(self, keys: Iterable[str], timeout: float, check: Callable[[], T | None]) -> T | None:
        """``check()`` until it finds something (returned), ``timeout`` passes or the gateway closes (None);
        it looks again when a key is notified, and every ``recheck`` seconds."""
        deadline = time.monotonic() + timeout
        event, names = self._register(keys)
        try:
            while True:
                event.clear()
                found = check()
                remaining = deadline - time.monotonic()
                if found is not None or self.closing or remaining <= 0:
                    return found
                with suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, self.recheck))
        finally:
            self._unregister(event, names)

    def close(self) -> None:
        super().close()
        self._set(*self.waiters)

    # ---- client side ------------------------------------------------------------------------------

    def submit(self, endpoint: str, payload: Any, *, sync: bool = False, webhook: str | None = None,
               execution_timeout: float, ttl: float, low_priority: bool = False, idempotency_key: str | None = None,
               max_queue: int | None = None, owner: str | None = None, quota: Quota | None = None
               ) -> tuple[Job, bool]:
        quota = quota or Quota()
        retry = max(1, round(self.timings.reconcile_interval * 5))
        job = Job(id=("sync-" if sync else "") + str(uuid.uuid4()), endpoint=endpoint, input=payload,
                  created_at=self.clock(), sync=sync, webhook=webhook, execution_timeout=execution_timeout, ttl=ttl,
                  low_priority=low_priority, idempotency_key=idempotency_key, owner=owner)
        try:
            stored, new = self.pg.insert(job, Admission(max_queue, quota.max_queued, quota.max_open, retry))
        except Refused as exc:
            raise QueueFull(str(exc), retry) from None
        if new:
            self.unseen = job.id
            self._dispatch(endpoint)
        return stored, new

    def get(self, job_id: str) -> Job | None:
        return self.pg.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        ended = self._end(f"id = %s AND {OPEN}", (job_id,), Ending(JobStatus.CANCELLED, "null",
                                                                       json.dumps("cancelled by request")))
        return ended[0] if ended else self.get(job_id)

    def retry(self, job_id: str) -> Job | None:
        job = self.pg.retry(job_id, self.clock())
        if job is None:
            return self.get(job_id)
        self._wake(job.endpoint)
        return job

    def purge(self, endpoint: str, owner: str | None = None) -> int:
        where, params = "endpoint = %s AND status = 'IN_QUEUE'", [endpoint]
        if owner is not None:
            where, params = where + " AND (owner IS NULL OR owner = %s)", [endpoint, owner]
        ending = Ending(JobStatus.CANCELLED, "null", json.dumps("removed by purge-queue"))
        return len(self._end(where, params, ending, signal=False))

    def drain_chunks(self, job: Job) -> list[Any]:
        return self.pg.drain(job.id)

    async def follow(self, job: Job, keepalive: float) -> AsyncGenerator[list[Any] | None]:
        """As JobQueue's, from the database: chunks posted on any replica, and the job's status."""
        sent, quiet = 0, time.monotonic()
        event, keys = self._register([f"chunk:{job.id}", f"done:{job.id}"])
        try:
            while True:
                event.clear()
                try:
                    fresh, latest = self.pg.chunks_since(job.id, sent), self.pg.get(job.id)
                except StoreError:
                    return  # the stream ends; the client asks again once the database answers
                if latest is not None:
                    adopt(job, latest)
                sent += len(fresh)
                yield fresh
                if job.terminal or latest is None or self.closing:
                    return
                try:
                    await asyncio.wait_for(event.wait(), min(keepalive, self.recheck))
                    quiet = time.monotonic()
                except TimeoutError:
                    if time.monotonic() - quiet >= keepalive:
                        quiet = time.monotonic()
                        yield None
        finally:
            self._unregister(event, keys)

    def stats(self, endpoint: str) -> QueueStats:
        row = self.pg.stats(endpoint)
        oldest = row["oldest"]
        wait = self.clock() - oldest if oldest is not None else 0.0
        return QueueStats(int(row["queued"]), int(row["running"]), wait, int(row["scalable"]),
                          float(row["woke_at"] or 0.0))

    async def wait_done(self, job: Job, timeout: float) -> bool:
        """As JobQueue's. Reads the database only when it may have news: not for the job this replica has just
        submitted (runsync; until any job ends or the listener reconnects), nor for one this replica ended
        (handed over by :meth:`_end`)."""
        if job.terminal:
            return True
        unseen, self.unseen = self.unseen == job.id, None

        def check() -> Job | None:
            nonlocal unseen
            if unseen:
                unseen = False
                return None
            try:
                fresh = self.settled.pop(job.id, None) or self.pg.get(job.id)
            except StoreError:
                return None  # the job was accepted: it waits on (the client may ask its status later)
            return fresh if fresh is not None and fresh.terminal else None
        try:
            fresh = await self._until([f"done:{job.id}"], timeout, check)
        finally:
            self.settled.pop(job.id, None)
        if fresh is not None:
            adopt(job, fresh)
        return job.terminal

    # ---- worker side -------------------------------------------------------------------------------

    async def _take(self, endpoint: str, worker_id: str, count: int, timeout: float,
                    disconnected: Callable[[], Awaitable[bool]] | None, eligible: Callable[[], bool],
                    limit: int | None) -> list[Job]:
        deadline = time.monotonic() + timeout
        woken = False
        while not self.closing and eligible():
            jobs, held = self._claim(endpoint, worker_id, count, limit)
            if jobs:
                return jobs
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if limit is None or held < limit:
                woken = await self._wait_for_work(endpoint, eligible, min(remaining, self.recheck))
            else:
                woken = False
                await self._wait_for_slot(worker_id, min(remaining, self.recheck))
            if disconnected is not None and await disconnected():
                break
        if woken and not self.closing and self.pg.queued(endpoint):
            self._dispatch(endpoint)  # woken for a job this worker will not take: pass it on
        return []

    def _claim(self, endpoint: str, worker_id: str, count: int, limit: int | None) -> tuple[list[Job], int]:
        """The jobs taken, and how many the worker held before (read by the same statement)."""
        now = self.clock()
        taken, held = self.pg.claim(endpoint, worker_id, count, limit, now, now + self.timings.lease_timeout)
        if taken:
            handed = self.handed.get(worker_id)
            if handed is not None:
                handed.set()
            for job in taken:
                for listener in self.on_started:
                    listener(job)
        return taken, held

    def held(self, endpoint: str, worker_id: str) -> int:
        """As JobQueue's; right after :meth:`result` ended one of the worker's jobs, the count its finish
        statement read (the done route asks just then: no second round trip)."""
        known = self.held_after.pop((endpoint, worker_id), None)
        return known if known is not None else self.pg.held(endpoint, worker_id)

    def result(self, job_id: str, worker_id: str, body: dict[str, Any]) -> Job | None:
        if body.get("status") == JobStatus.IN_PROGRESS:
            job = self.pg.progress(job_id, worker_id, json.dumps(body.get("output")), self._lease())
            if job is not None:
                self._event("chunk", job_id)
            return job
        output, error = json.dumps(body.get("output")), body.get("error")
        status = JobStatus.FAILED if error else JobStatus.COMPLETED
        ended = self._end("id = %s AND status = 'IN_PROGRESS' AND worker_id = %s", (job_id, worker_id),
                          Ending(status, output, json.dumps(error or None)), signal=False)
        if not ended:
            return None  # a late post for a job that finished, was cancelled or was handed to another worker
        self.held_after[(ended[0].endpoint, worker_id)] = max(0, self.held_before.pop(job_id, 1) - 1)
        if body.get("stopPod"):
            for listener in self.on_stop_worker:
                listener(worker_id, "the handler asked for a fresh worker (refresh_worker)")
        return ended[0]

    def chunk(self, job_id: str, worker_id: str, output: Any, size: int = 0) -> Job | None:
        job = self.pg.chunk(job_id, worker_id, json.dumps(output), size, self.budget.stream_job,
                            self.budget.stream_total, self._lease())
        if job is not None:
            self._event("chunk", job_id)
        return job

    def renew(self, worker_id: str, job_ids: list[str]) -> None:
        if self.pg.renew(worker_id, job_ids, self._lease(), self.clock()):
            self._event("stop", worker_id)

    def _lease(self) -> float:
        return self.clock() + self.timings.lease_timeout

    def jobs_of(self, worker_id: str) -> list[Job]:
        return self.pg.running(worker_id)

    def running_jobs(self) -> list[Job]:
        return self.pg.running()

    def worker_lost(self, worker_id: str, reason: str) -> list[Job]:
        return self._requeue_or_fail_where("worker_id = %s", (worker_id,), LOST.format(reason="%s"), (reason,))

    def _requeue_or_fail_where(self, where: str, params: tuple[Any, ...], lost: str, lost_params: tuple[Any, ...]
                         ) -> list[Job]:
        """Running jobs matching ``where``: failed when out of attempts, else back at the head of the queue."""
        failed = self._end(f"{where} AND status = 'IN_PROGRESS' AND attempts >= %s",
                           (*params, self.timings.max_job_attempts),
                           Ending(JobStatus.FAILED, "null", error_sql=lost, error_params=lost_params), signal=False)
        requeued = self.pg.requeue(where, params, self.timings.max_job_attempts)
        for job, was in requeued:
            self.requeued[job.endpoint] = self.requeued.get(job.endpoint, 0) + 1
            self._slot(was)
            self._wake(job.endpoint)
        return failed + [job for job, _ in requeued]

    # ---- stop channel ------------------------------------------------------------------------------

    def control(self, worker_id: str, command: str) -> None:
        self.pg.control(worker_id, command, self.clock())
        self._event("stop", worker_id)

    def take_control(self, worker_id: str) -> str | None:
        return self.pg.take_control(worker_id)

    def release(self, worker_id: str) -> None:
        self.pg.release(worker_id)
        self._event("release", worker_id)

    async def wait_stops(self, worker_id: str, timeout: float) -> list[str]:
        def check() -> list[str] | None:
            if worker_id in self.released:
                self.released.discard(worker_id)
                return []
            stops, control = self.pg.stops(worker_id)
            return stops if stops or control else None
        if timeout <= 0 or self.closing:
            return self.pg.stops(worker_id)[0]
        return await self._until([f"stop:{worker_id}"], timeout, check) or []

    # ---- finishing and timers ----------------------------------------------------------------------

    def _end(self, where: str, params: Iterable[Any], ending: Ending, signal: bool = True) -> list[Job]:
        """End the jobs matching ``where`` (conditionally: only this call's matches), then tell the listeners."""
        timings = self.timings
        ended = self.pg.finish(where, list(params), ending, self.clock(),
                               (timings.result_retention_sync, timings.result_retention_run), signal)
        self.held_before = {job.id: held for job, held in ended}
        jobs = [job for job, _ in ended]
        for job in jobs:
            if f"done:{job.id}" in self.waiters:
                self.settled[job.id] = job
            self._event("done", job.id, job.worker_id or "")
            if signal and job.worker_id:
                self._event("stop", job.worker_id)
            for listener in self.on_finished:
                listener(job)
        return jobs

    def sweep(self) -> None:
        now = self.clock()
        for job_id, limit in self.pg.overdue(now):
            for job in self._end("id = %s AND status = 'IN_PROGRESS' AND started_at + execution_timeout < %s",
                                 (job_id, now), Ending(JobStatus.TIMED_OUT, "null", json.dumps(
                                     f"execution timeout of {limit:g}s exceeded"))):
                for listener in self.on_stop_worker:
                    listener(job.worker_id or "", f"job {job.id} exceeded its execution timeout")
        self._requeue_or_fail_where("lease_until < %s", (now,),
                              LOST.format(reason="'worker ' || worker_id || ' stopped sending heartbeats'"), ())
        self._expire_ttl(now)
        self._expire_results(now)
        self.pg.prune_signals(now - SIGNAL_KEEP)
        for also in self.on_sweep:
            also(now)

    def _expire_ttl(self, now: float) -> None:
        by_endpoint: dict[str, list[str]] = {}
        for job_id, endpoint in self.pg.ttl_expired(now, SWEEP_BATCH):
            by_endpoint.setdefault(endpoint, []).append(job_id)
        for endpoint, ids in by_endpoint.items():
            why = self.condition_of(endpoint)
            error = "the job's ttl expired" + (f" while {why}" if why else "")
            self._end(f"id = ANY(%s) AND {OPEN} AND created_at + ttl < %s", (ids, now),
                      Ending(JobStatus.TIMED_OUT, "null", json.dumps(error)))

    def fail_endpoint(self, endpoint: str, reason: str) -> int:
        return len(self._end(f"endpoint = %s AND {OPEN}", (endpoint,),
                             Ending(JobStatus.FAILED, "null", json.dumps(reason))))
