"""The gateway's workers: starting and stopping them through providers, noticing when they die.

This is the only caller of ``Provider.start_worker`` and ``Provider.stop_worker``. Provider calls block,
so they run in threads; everything else runs on the event loop. Its collaborators are explicit: the worker
rows of the store, a way to reach each pool's provider, the queue's worker channel (stats, stop signals,
requeues), the ledger, the metrics and a clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuform.config.schema import GatewayTimings, LogRotation
from gpuform.errors import GpuformError, NoCapacity
from gpuform.gateway.logs import job_fields, worker_fields
from gpuform.gateway.metering import Ledger, price_per_second
from gpuform.gateway.metrics import Metrics
from gpuform.gateway.queue import JobQueue
from gpuform.gateway.replicas import worker_urls
from gpuform.gateway.sharing import SYNC_EVERY, Sharing, absorb
from gpuform.gateway.states import WorkerState
from gpuform.gateway.store import WorkerRows
from gpuform.gateway.workers import WorkerRecord, new_token
from gpuform.provider import Provider, WorkerInfo, WorkerLaunch
from gpuform.spec import EndpointSpec
from gpuform.workerspec import VOLUME_MOUNT, template_argv

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord

log = logging.getLogger("gpuform.fleet")
KEEP_FINISHED = 50
Clock = Callable[[], float]
ProviderAccess = Callable[[str], Provider]  # pool name -> its provider (raises GpuformError when unknown)


@dataclass
class Condition:
    """Why an endpoint has fewer workers than it wants: OK, NO_CAPACITY, UNHEALTHY or SPEND_CAP."""

    status: str = "OK"
    message: str = ""
    log_tail: str = ""
    since: float = field(default_factory=time.time)
    failures: int = 0
    backoff_until: float = 0.0

    def to_json(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "message": self.message, "since": self.since,
                               "failures": self.failures}
        if self.log_tail:
            out["log_tail"] = self.log_tail
        if self.backoff_until > now:
            out["retry_at"] = self.backoff_until
        return out


@dataclass(frozen=True)
class FleetSettings:
    """What the fleet needs of the gateway's configuration."""

    lineage: str
    advertise_url: str
    timings: GatewayTimings
    prices: Mapping[str, Mapping[str, float]]  # pool -> price per GPU-second by type
    worker_files: Mapping[str, bytes] = field(default_factory=dict)  # env var -> file content (gateway/tls.py)
    connection: str = ""  # what a worker's link to the gateway depends on beyond its endpoint (gateway/tls.py)
    logs: LogRotation = field(default_factory=LogRotation)  # workers' logs rotate like the gateway's
    replica_urls: tuple[str, ...] = ()  # every replica's URL (gateway/replicas.py)


class Fleet:
    """The workers, in memory. A replica's fleet (``sharing`` given) also learns workers from the store: one
    it did not start is found by its token's hash; what other replicas recorded is taken by :meth:`refresh`."""

    def __init__(self, settings: FleetSettings, rows: WorkerRows, providers: ProviderAccess, queue: JobQueue,
                 ledger: Ledger, metrics: Metrics, hash_token: Callable[[str], str], clock: Clock = time.time,
                 sharing: Sharing | None = None) -> None:
        self.settings = settings
        self.rows = rows
        self.providers = providers
        self.queue = queue
        self.ledger = ledger
        self.metrics = metrics
        self.hash_token = hash_token
        self.clock = clock
        self.records: dict[str, WorkerRecord] = {}
        self.by_token: dict[str, str] = {}
        self.conditions: dict[str, Condition] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.starting: dict[str, asyncio.Task[None]] = {}  # worker id -> its start_worker call in flight
        self.sharing = sharing
        self.stopping_here: set[str] = set()  # worker ids whose stop runs in this process now
        self.lost_with_host: dict[str, str] = {}  # worker id -> pool: written off while its host did not answer
        self._synced: dict[str, float] = {}  # worker id -> when its copy was last read from the store
        self._touched: dict[str, float] = {}  # worker id -> when its last contact was written

    # ---- lookup -----------------------------------------------------------------------------------

    def restore(self) -> None:
        """Adopt the workers a previous gateway process left; one caught stopping is stopped again."""
        for record in self.rows.live():
            self._add(record)
            if record.state == WorkerState.STOPPING:
                self.spawn(self._complete_stop(record, record.exit_reason or "stopping when the gateway restarted",
                                               self.settings.timings.drain_timeout))

    def _add(self, record: WorkerRecord) -> None:
        self.records[record.id] = record
        self.by_token[record.token_hash] = record.id

    def revision(self, ep: EndpointRecord) -> str:
        """The revision a worker of ``ep`` starts with: the endpoint's, plus the gateway's connection settings
        (TLS), so that changing them replaces the workers like a new release (old ones cannot reach it)."""
        return f"{ep.revision}+{self.settings.connection}" if self.settings.connection else ep.revision

    def mark_stale(self, ep: EndpointRecord) -> None:
        """Workers of another revision are stale: idle ones are replaced now, busy ones after their job."""
        for worker in self.of(ep.name):
            worker.stale = worker.revision != self.revision(ep)

    def of(self, endpoint: str) -> list[WorkerRecord]:
        return [w for w in self.records.values() if w.endpoint == endpoint]

    def authenticate(self, token: str | None) -> WorkerRecord | None:
        if not token:
            return None
        token_hash = self.hash_token(token)
        worker_id = self.by_token.get(token_hash)
        record = self.records.get(worker_id) if worker_id else None
        if self.sharing is None:
            return record
        if record is None or self.clock() - self._synced.get(record.id, 0.0) >= SYNC_EVERY:
            return self._sync(token_hash, record)
        return record

    def _sync(self, token_hash: str, record: WorkerRecord | None) -> WorkerRecord | None:
        """A replica's copy of a worker brought up to date from its row (added when it had none)."""
        assert self.sharing is not None
        found = self.sharing.rows.by_token(token_hash)
        if found is None:
            return record
        self._synced[found.id] = self.clock()
        if record is None:
            self._add(found)
            return found
        absorb(record, found, record.id in self.starting, self.clock())
        return record

    def refresh(self) -> list[WorkerRecord]:
        """Take what other replicas recorded of every live worker (its contacts, readiness, jobs, start);
        return the workers this fleet did not know (now added)."""
        if self.sharing is None:
            return []
        now, added, seen = self.clock(), [], set()
        for found in self.sharing.rows.current():
            seen.add(found.id)
            self._synced[found.id] = now
            mine = self.records.get(found.id)
            if mine is None:
                self._add(found)
                added.append(found)
            else:
                absorb(mine, found, mine.id in self.starting, now)
        for gone in [w for w in self.records.values() if w.id not in seen and self._ended_elsewhere(w)]:
            self._drop(gone)  # stopped through another replica (an earlier leader): its row says so
        return added

    def _ended_elsewhere(self, record: WorkerRecord) -> bool:
        unfinished = record.live or record.state in (WorkerState.STOPPING, WorkerState.SLEEPING)
        return unfinished and record.id not in self.starting and record.id not in self.stopping_here

    def _drop(self, record: WorkerRecord) -> None:
        self.records.pop(record.id, None)
        self.by_token.pop(record.token_hash, None)
        self._synced.pop(record.id, None)
        self._touched.pop(record.id, None)

    def adopt(self) -> None:
        """On becoming leader: know every live worker the store has (ones an earlier leader started, or was
        starting), and stop again the ones caught stopping. A lone gateway restored them at start already."""
        if self.sharing is None:
            return
        self.refresh()
        for record in list(self.records.values()):
            if record.state == WorkerState.STOPPING and record.id not in self.starting and \
                    record.id not in self.stopping_here:
                self.spawn(self._complete_stop(record, record.exit_reason or "stopping when the leader changed",
                                               self.settings.timings.drain_timeout))

    def condition(self, endpoint: str) -> Condition:
        return self.conditions.setdefault(endpoint, Condition(since=self.clock()))

    def _save(self, record: WorkerRecord) -> None:
        self.rows.save(record)
        if self.sharing is not None:
            self._touched[record.id] = self.clock()  # the row's contact is as fresh as the copy's

    def _touch(self, worker: WorkerRecord, now: float) -> None:
        """Replicas: record a contact in the store, at most once a second per worker (the leader reads it)."""
        if self.sharing is not None and now - self._touched.get(worker.id, 0.0) >= SYNC_EVERY:
            self._touched[worker.id] = now
            self.sharing.rows.touch(worker.id, now)

    # ---- events from the worker routes and the queue -------------------------------------------------

    def contact(self, worker: WorkerRecord, now: float) -> None:
        """A job-take or heartbeat: the worker is alive (and ready, the first time)."""
        worker.last_seen = now
        if worker.state != WorkerState.INITIALIZING or worker.waking:
            self._touch(worker, now)
            return
        worker.ready_at = now
        worker.mark("ready", now)
        worker.move(WorkerState.IDLE, now)
        self.metrics.cold_start.labels(worker.endpoint).observe(now - worker.requested_at)
        self.metrics.observe(worker.endpoint, "cold_start", now - worker.requested_at)
        for phase, at in worker.timeline.items():
            if phase not in ("start_requested", "job_queued", "first_job", "first_token"):
                self.metrics.cold_start_phase.labels(worker.endpoint, phase).observe(at - worker.requested_at)
        cond = self.condition(worker.endpoint)
        cond.failures, cond.backoff_until = 0, 0.0
        if cond.status == "UNHEALTHY":
            self.conditions[worker.endpoint] = Condition(since=now)
        self._save(worker)

    def first_output(self, worker: WorkerRecord) -> None:
        """The first output (chunk or result) of a worker's first job: the end of its cold start."""
        if "first_token" in worker.timeline:
            return
        worker.mark("first_token", self.clock())
        self.metrics.cold_start_phase.labels(worker.endpoint, "first_token").observe(
            worker.timeline["first_token"] - worker.requested_at)
        self._save(worker)

    def job_started(self, worker_id: str, job_id: str, now: float) -> None:
        worker = self.records.get(worker_id)
        if worker is None:
            return
        worker.jobs.add(job_id)
        if worker.first_job_at is None:
            worker.first_job_at = now
            worker.mark("first_job", now)
            self.metrics.cold_start_phase.labels(worker.endpoint, "first_job").observe(now - worker.requested_at)
        if worker.state in (WorkerState.IDLE, WorkerState.INITIALIZING):
            worker.move(WorkerState.RUNNING, now)

    def job_finished(self, worker_id: str | None, job_id: str, now: float) -> None:
        worker = self.records.get(worker_id or "")
        if worker is None:
            return
        worker.jobs.discard(job_id)
        if worker.state == WorkerState.RUNNING and not worker.jobs:
            worker.move(WorkerState.IDLE, now)

    # ---- lifecycle --------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def start(self, ep: EndpointRecord) -> WorkerRecord:
        """Record a starting worker now (so the next scaling decision counts it) and launch it in the background.
        A replica records it fenced by its epoch first: raises :class:`~gpuform.errors.Fenced`, with nothing
        started, when it no longer leads."""
        now = self.clock()
        token = new_token()
        record = WorkerRecord(id=f"{ep.name}-{uuid.uuid4().hex[:10]}", endpoint=ep.name, pool=ep.spec.pool,
                              revision=self.revision(ep), token_hash=self.hash_token(token), requested_at=now)
        record.mark("start_requested", now)
        waiting = self.queue.stats(ep.name)
        if waiting.queued:
            record.mark("job_queued", now - waiting.oldest_wait)
        if self.sharing is not None:
            self.sharing.rows.insert_fenced(record, self.sharing.epoch())
        else:
            self._save(record)
        self._add(record)
        self.metrics.cold_starts.labels(ep.name).inc()
        task = self.spawn(self._start(ep, record, self._launch(ep, record, token)))
        self.starting[record.id] = task
        task.add_done_callback(lambda _: self.starting.pop(record.id, None))
        return record

    async def _start(self, ep: EndpointRecord, record: WorkerRecord, launch: WorkerLaunch) -> None:
        try:
            provider = self.providers(record.pool)
            info = await asyncio.to_thread(provider.start_worker, launch)
        except Exception as exc:  # a provider bug must not leave the worker "initializing" forever either
            if not isinstance(exc, GpuformError):
                log.exception("starting %s failed", record.id)
            if record.state == WorkerState.STOPPING:
                return  # a stop requested meanwhile finalizes the record itself
            if isinstance(exc, NoCapacity):
                self._forget(record, "throttled: " + exc.message)
                self.conditions[ep.name] = Condition("NO_CAPACITY", exc.message, since=self.clock())
            else:
                reason = exc.message if isinstance(exc, GpuformError) else f"{type(exc).__name__}: {exc}"
                self._failed(record, f"could not start: {reason}", "")
            return
        record.info, record.host, record.gpu_type = info, info.host, info.gpu_type
        record.gpus = len(info.gpu_indices) or ep.spec.gpu.count
        record.price = price_per_second(dict(self.settings.prices.get(record.pool, {})), info.gpu_type, record.gpus)
        record.mark("process_started", self.clock())
        if self.condition(ep.name).status == "NO_CAPACITY":
            self.conditions[ep.name] = Condition(since=self.clock())
        self._save(record)

    def _launch(self, ep: EndpointRecord, record: WorkerRecord, token: str) -> WorkerLaunch:
        worker = ep.spec.worker
        return WorkerLaunch(
            worker_id=record.id, endpoint=ep.name, lineage=self.settings.lineage, template=worker.template,
            image=worker.image, command=template_argv(worker.template, worker.command), python=worker.python,
            workdir=worker.workdir, env=self.worker_env(ep, record, token), gpu_types=list(ep.spec.gpu.types),
            gpu_count=ep.spec.gpu.count, volume_path=ep.spec.volume_path, keep_stopped=worker.keep_stopped,
            spec_revision=record.revision, files=dict(self.settings.worker_files), logs=self.settings.logs)

    def worker_env(self, ep: EndpointRecord, record: WorkerRecord, token: str) -> dict[str, str]:
        """The RunPod worker protocol's variables (reference/runpod.md §5), then the endpoint's own env."""
        base = f"{self.settings.advertise_url}/v2/{ep.name}"
        timings = self.settings.timings
        ping_ms = max(1000, round(timings.ping_interval * 1000))
        env = {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=any",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=any",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=any",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=any",
            "RUNPOD_PING_INTERVAL": str(ping_ms), "RUNPOD_POD_ID": record.id, "RUNPOD_AI_API_KEY": token,
            "RUNPOD_POD_HOSTNAME": record.id, "RUNPOD_ENDPOINT_ID": ep.name, "RUNPOD_LOG_LEVEL": "INFO",
            "GPUFORM_WORKER_EVENTS": f"{base}/worker-event/{record.id}",
            "GPUFORM_TAKE_TIMEOUT": str(timings.take_timeout),
            **worker_urls(self.settings.advertise_url, self.settings.replica_urls),
        }
        if ep.spec.worker.concurrency is not None:
            env["GPUFORM_CONCURRENCY"] = str(ep.spec.worker.concurrency)
        env.update(_model_env(ep.spec))
        if not ep.spec.worker.runpod_system_checks:
            env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] = "true"
            env["RUNPOD_SKIP_GPU_CHECK"] = "true"
        declared = {k: _env_str(v) for k, v in ep.spec.worker.env.items()}
        env["GPUFORM_ENDPOINT_ENV_KEYS"] = ",".join(sorted({*declared, *ep.secret_env}))
        env.update(declared)
        env.update(ep.secret_env)
        return env

    def sleep(self, record: WorkerRecord) -> None:
        """vLLM sleep mode: the worker frees its GPU memory and stays up; it takes no jobs until woken."""
        now = self.clock()
        record.move(WorkerState.SLEEPING, now)
        record.mark("sleep_requested", now)
        self.queue.control(record.id, "sleep")
        self._save(record)

    def wake(self, record: WorkerRecord) -> None:
        now = self.clock()
        record.move(WorkerState.INITIALIZING, now)
        record.waking = True
        record.timeline["wake_requested"] = now
        self.queue.control(record.id, "wake")
        self._save(record)

    def worker_event(self, record: WorkerRecord, phase: str, at: float) -> None:
        """A phase the worker reported; ``awake`` ends a wake-up, a failed sleep or wake stops the worker."""
        if phase in ("asleep", "awake"):
            record.timeline[phase] = at
        else:
            record.mark(phase, at)
        if phase == "awake" and record.waking and record.state == WorkerState.INITIALIZING:
            record.waking = False
            record.move(WorkerState.IDLE, at)
            self.metrics.observe(record.endpoint, "wake", at - record.timeline.get("wake_requested", at))
        elif phase in ("sleep_failed", "wake_failed"):
            self.spawn(self.stop(record, f"vLLM {phase.replace('_', ' ')}"))
        self._save(record)

    async def stop(self, record: WorkerRecord, reason: str, grace: float | None = None) -> None:
        if record.state in (WorkerState.STOPPING, WorkerState.STOPPED, WorkerState.UNHEALTHY):
            return
        record.waking = False
        record.move(WorkerState.STOPPING, self.clock(), reason)
        record.mark("stop_requested", self.clock())
        self._save(record)
        self.queue.release(record.id)
        await self._complete_stop(record, reason, self.settings.timings.drain_timeout if grace is None else grace)

    async def _complete_stop(self, record: WorkerRecord, reason: str, grace: float) -> None:
        """Stop a ``stopping`` worker on its provider and finalize its record."""
        self.stopping_here.add(record.id)
        try:
            await self._stop_on_provider(record, reason, grace)
        finally:
            self.stopping_here.discard(record.id)

    async def _stop_on_provider(self, record: WorkerRecord, reason: str, grace: float) -> None:
        starting = self.starting.get(record.id)
        if starting is not None:  # stopped while its start is in flight: stop what that start creates
            await asyncio.shield(starting)
        try:
            if record.info is not None:
                await asyncio.to_thread(self.providers(record.pool).stop_worker, record.info, grace)
        except GpuformError as exc:
            log.warning("stopping %s failed: %s", record.id, exc.message)
        except Exception:  # a provider bug: logged; the record is finalized all the same
            log.exception("stopping %s failed", record.id)
        self._finalize(record, WorkerState.STOPPED, reason)

    def _finalize(self, record: WorkerRecord, state: WorkerState, reason: str) -> None:
        now = self.clock()
        self.ledger.accrue(record, now)  # nothing when its start failed (no info: nothing ran)
        record.move(state, now, reason)
        lost = self.queue.worker_lost(record.id, f"worker {record.id} stopped: {reason}")
        for job in lost:
            log.info("job %s requeued (or failed after its last attempt): worker %s stopped", job.id, record.id,
                     extra=job_fields(job) | {"worker_id": record.id})
        self._save(record)
        finished = sorted((w for w in self.records.values() if w.state in (WorkerState.STOPPED,
                                                                           WorkerState.UNHEALTHY)),
                          key=lambda w: w.stopped_at or 0)
        for old in finished[:-KEEP_FINISHED]:
            self._drop(old)

    def _forget(self, record: WorkerRecord, reason: str) -> None:
        """A start that never happened (no capacity): nothing ran, nothing to bill or keep."""
        record.move(WorkerState.STOPPED, self.clock(), reason)
        record.billed_until = record.stopped_at
        self.records.pop(record.id, None)
        self.by_token.pop(record.token_hash, None)
        self._save(record)

    def _failed(self, record: WorkerRecord, reason: str, log_tail: str) -> None:
        record.log_tail = log_tail
        self.metrics.crashes.labels(record.endpoint).inc()
        self._finalize(record, WorkerState.UNHEALTHY, reason)
        cond = self.condition(record.endpoint)
        cond.failures += 1
        timings = self.settings.timings
        delay = min(timings.start_backoff * 2 ** (cond.failures - 1), timings.start_backoff_max)
        now = self.clock()
        cond.status, cond.message, cond.log_tail = "UNHEALTHY", f"worker {record.id} {reason}", log_tail
        cond.backoff_until, cond.since = now + delay, now
        log.warning("worker %s unhealthy (%s); next start in %.0fs", record.id, reason, delay,
                    extra=worker_fields(record.id, record.endpoint))

    async def observe(self, endpoint: str) -> None:
        """Compare our records with what the provider sees; a worker that vanished has crashed."""
        mine = [w for w in self.of(endpoint) if w.live and w.info is not None]
        pools = {w.pool for w in self.of(endpoint)}
        seen: dict[str, WorkerInfo] = {}
        cordoned: set[str] = set()
        unreachable: dict[str, str] = {}  # host -> why
        for pool in pools:
            try:
                provider = self.providers(pool)
                infos = await asyncio.to_thread(provider.list_workers, endpoint)
                hosts = await asyncio.to_thread(provider.inventory)
            except GpuformError as exc:
                log.warning("cannot list workers of %s on pool %s: %s", endpoint, pool, exc.message)
                return
            seen.update({i.worker_id: i for i in infos})
            cordoned |= {h.host for h in hosts if h.cordoned}
            unreachable |= {h.host: h.reason for h in hosts if not h.reachable}
        for record in mine:
            if record.host in cordoned and not record.stale:
                record.stale = True  # drains like a rolling release: idle now, busy after their job
        for worker_id in [w for w in self.lost_with_host if w in seen]:  # its host answers again
            pool = self.lost_with_host.pop(worker_id)
            if seen[worker_id].state == "running":
                log.info("stopping worker %s: written off with its host, which answers again", worker_id)
                try:
                    await asyncio.to_thread(self.providers(pool).stop_worker, seen[worker_id], 5.0)
                except GpuformError as exc:
                    self.lost_with_host[worker_id] = pool  # the next listing tries again
                    log.warning("cannot stop worker %s yet: %s", worker_id, exc.message)
        for record in mine:
            info = seen.get(record.id)
            if info is not None and info.state == "running":
                continue
            if info is None and record.host in unreachable:
                self._host_lost(record, unreachable[record.host])
            else:
                await self._crashed(record, info)

    def _host_lost(self, record: WorkerRecord, why: str) -> None:
        """A worker on a host that does not answer the provider: alive while its heartbeats still come (it may
        be only the host's SSH that fails), lost with its host once they have stopped for a lease. Not a crash:
        nothing says its process ended; if the host answers again, the next listing stops it."""
        silent = self.clock() - (record.last_seen or record.requested_at)
        if silent < self.settings.timings.lease_timeout:
            return
        reason = f"lost with its host {record.host}, which does not answer ({why}); no heartbeat for {silent:.0f}s"
        log.warning("worker %s %s", record.id, reason, extra=worker_fields(record.id, record.endpoint))
        self._finalize(record, WorkerState.STOPPED, reason)
        self.lost_with_host[record.id] = record.pool

    async def _crashed(self, record: WorkerRecord, info: WorkerInfo | None) -> None:
        tail = ""
        if info is not None:
            tail = await asyncio.to_thread(self.providers(record.pool).worker_logs, info, 20)
        if not record.live:
            return  # stopped meanwhile, on purpose
        code = f" with code {info.exit_code}" if info is not None and info.exit_code is not None else ""
        if record.ready_at is None:
            self._failed(record, f"exited{code} before it became ready", tail)
        else:
            record.log_tail = tail
            self.metrics.crashes.labels(record.endpoint).inc()
            self._finalize(record, WorkerState.STOPPED, f"exited{code} unexpectedly; last log lines:\n{tail}")

    async def check_readiness(self, ep: EndpointRecord, now: float) -> None:
        timeout = ep.spec.worker.ready_timeout
        for record in self.of(ep.name):
            if record.state == WorkerState.INITIALIZING and record.info is not None and \
                    now - record.requested_at > timeout:
                provider = self.providers(record.pool)
                tail = await asyncio.to_thread(provider.worker_logs, record.info, 20)
                await asyncio.to_thread(provider.stop_worker, record.info, 5.0)
                if record.state == WorkerState.INITIALIZING:
                    self._failed(record, f"did not become ready within {timeout:g}s", tail)

    async def sweep_orphans(self, endpoint: str, pool: str, grace: float = 0.0) -> None:
        """After a restart: stop workers of this lineage the gateway has no record of (left by an earlier
        gateway), and settle the ones whose start was in flight when the earlier gateway died — adopted when
        the provider has them, forgotten when it does not (they never ran, so nothing is billed). A start
        requested less than ``grace`` seconds ago may still be running in a replica that lost its leadership
        (it is still counted, so no replacement starts): it is settled by a later sweep."""
        try:
            provider = self.providers(pool)
            infos = await asyncio.to_thread(provider.list_workers, endpoint)
        except GpuformError:
            return
        found = {info.worker_id: info for info in infos}
        for info in infos:
            if info.worker_id not in self.records and info.state == "running":
                log.info("stopping orphan worker %s", info.worker_id)
                await asyncio.to_thread(provider.stop_worker, info, 5.0)
        for record in self.of(endpoint):
            if record.state != WorkerState.INITIALIZING or record.info is not None or record.id in self.starting:
                continue
            adopted = found.get(record.id)
            if adopted is None and self.clock() - record.requested_at < grace:
                continue
            if adopted is not None and adopted.state == "running":
                record.info, record.host, record.gpu_type = adopted, adopted.host, adopted.gpu_type
                record.gpus = len(adopted.gpu_indices) or record.gpus or 1
                record.price = price_per_second(dict(self.settings.prices.get(record.pool, {})), adopted.gpu_type,
                                                record.gpus)
                self._save(record)
            else:
                if adopted is not None:  # created, never started: clean it up
                    await asyncio.to_thread(provider.stop_worker, adopted, 5.0)
                self._forget(record, "its start was interrupted by a gateway restart")

    def live_count(self, endpoint: str) -> int:
        return sum(1 for w in self.of(endpoint) if w.live)


def _model_env(spec: EndpointSpec) -> dict[str, str]:
    env: dict[str, str] = {}
    if spec.model is not None:
        env["GPUFORM_MODEL_NAME"] = spec.model.name
    if spec.volume_path:
        inner = spec.model.path.strip("/") if spec.model else ""
        env["RUNPOD_VOLUME_PATH"] = VOLUME_MOUNT
        env["GPUFORM_MODEL_PATH"] = spec.volume_path
        env["GPUFORM_VOLUME_ROOT"] = spec.volume_path[:-len(inner) - 1] if inner else spec.volume_path
        env["GPUFORM_MODEL_PATH_IN_CONTAINER"] = VOLUME_MOUNT + (f"/{inner}" if inner else "")
    return env


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
