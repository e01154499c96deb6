"""The gateway's workers: starting and stopping them through providers, noticing when they die.

This is the only caller of ``Provider.start_worker`` and ``Provider.stop_worker``. Provider calls block,
so they run in threads; everything else runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuform.engine.context import make_provider
from gpuform.errors import GpuformError, NoCapacity
from gpuform.gateway.autoscaler import IDLE, INITIALIZING, RUNNING, SLEEPING, STOPPING, UNHEALTHY
from gpuform.gateway.metering import price_per_second
from gpuform.gateway.workers import WorkerRecord, WorkerTable, new_token
from gpuform.provider import Provider, WorkerInfo, WorkerLaunch
from gpuform.workerspec import VOLUME_MOUNT, template_argv

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord, Runtime

log = logging.getLogger("gpuform.fleet")
STOPPED = "stopped"
KEEP_FINISHED = 50


@dataclass
class Condition:
    """Why an endpoint has fewer workers than it wants: OK, NO_CAPACITY, UNHEALTHY or SPEND_CAP."""

    status: str = "OK"
    message: str = ""
    log_tail: str = ""
    since: float = field(default_factory=time.time)
    failures: int = 0
    backoff_until: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "message": self.message, "since": self.since}
        if self.log_tail:
            out["log_tail"] = self.log_tail
        if self.backoff_until > time.time():
            out["retry_at"] = self.backoff_until
        return out


class Fleet:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.table = WorkerTable(runtime.db)
        self.records: dict[str, WorkerRecord] = {}
        self.by_token: dict[str, str] = {}
        self.conditions: dict[str, Condition] = {}
        self._providers: dict[str, Provider] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.starting: dict[str, asyncio.Task[None]] = {}  # worker id -> its start_worker call in flight

    # ---- lookup -----------------------------------------------------------------------------------

    def restore(self) -> None:
        for record in self.table.live():
            self._add(record)

    def _add(self, record: WorkerRecord) -> None:
        self.records[record.id] = record
        self.by_token[record.token_hash] = record.id

    def of(self, endpoint: str) -> list[WorkerRecord]:
        return [w for w in self.records.values() if w.endpoint == endpoint]

    def authenticate(self, token: str | None) -> WorkerRecord | None:
        if not token:
            return None
        worker_id = self.by_token.get(self.rt.keys.token_hash(token))
        return self.records.get(worker_id) if worker_id else None

    def condition(self, endpoint: str) -> Condition:
        return self.conditions.setdefault(endpoint, Condition())

    def provider(self, pool: str) -> Provider:
        if pool not in self._providers:
            attrs = self.rt.config.pools.get(pool)
            if attrs is None:
                raise GpuformError(f"the gateway has no configuration for pool {pool}",
                                   "Run `gpuform apply` so the gateway learns its pools.")
            self._providers[pool] = make_provider(pool, attrs, self.rt.config.lineage, self.rt.config.state_dir,
                                                  self.rt.config.config_dir)
        return self._providers[pool]

    # ---- events from the worker routes and the queue -------------------------------------------------

    def contact(self, worker: WorkerRecord, now: float) -> None:
        """A job-take or heartbeat: the worker is alive (and ready, the first time)."""
        worker.last_seen = now
        if worker.state == INITIALIZING and not worker.waking:
            worker.ready_at = now
            worker.mark("ready", now)
            worker.state, worker.idle_since = IDLE, now
            self.rt.metrics.cold_start.labels(worker.endpoint).observe(now - worker.requested_at)
            self.rt.metrics.observe(worker.endpoint, "cold_start", now - worker.requested_at)
            for phase, at in worker.timeline.items():
                self.rt.metrics.cold_start_phase.labels(worker.endpoint, phase).set(at - worker.requested_at)
            cond = self.condition(worker.endpoint)
            cond.failures, cond.backoff_until = 0, 0.0
            if cond.status == UNHEALTHY.upper():
                self.conditions[worker.endpoint] = Condition()
            self.table.save(worker)

    def first_output(self, worker: WorkerRecord) -> None:
        """The first output (chunk or result) of a worker's first job: the end of its cold start."""
        if "first_token" in worker.timeline:
            return
        worker.mark("first_token")
        self.rt.metrics.cold_start_phase.labels(worker.endpoint, "first_token").set(
            worker.timeline["first_token"] - worker.requested_at)
        self.table.save(worker)

    def job_started(self, worker_id: str, job_id: str, now: float) -> None:
        worker = self.records.get(worker_id)
        if worker is None:
            return
        worker.jobs.add(job_id)
        if worker.first_job_at is None:
            worker.first_job_at = now
            worker.mark("first_job", now)
        if worker.state in (IDLE, INITIALIZING):
            worker.state, worker.idle_since = RUNNING, None

    def job_finished(self, worker_id: str | None, job_id: str, now: float) -> None:
        worker = self.records.get(worker_id or "")
        if worker is None:
            return
        worker.jobs.discard(job_id)
        if worker.state == RUNNING and not worker.jobs:
            worker.state, worker.idle_since = IDLE, now

    # ---- lifecycle --------------------------------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def start(self, ep: EndpointRecord) -> None:
        """Record a starting worker now (so the next scaling decision counts it) and launch it in the background."""
        now = time.time()
        token = new_token()
        record = WorkerRecord(id=f"{ep.name}-{uuid.uuid4().hex[:10]}", endpoint=ep.name, pool=ep.spec["pool"],
                              revision=ep.revision, token_hash=self.rt.keys.token_hash(token), requested_at=now)
        record.mark("start_requested", now)
        oldest = self.rt.queue.stats(ep.name)
        if oldest.queued:
            record.mark("job_queued", now - oldest.oldest_wait)
        self._add(record)
        self.table.save(record)
        self.rt.metrics.cold_starts.labels(ep.name).inc()
        task = self.spawn(self._start(ep, record, self._launch(ep, record, token)))
        self.starting[record.id] = task
        task.add_done_callback(lambda _: self.starting.pop(record.id, None))

    async def _start(self, ep: EndpointRecord, record: WorkerRecord, launch: WorkerLaunch) -> None:
        try:
            provider = self.provider(record.pool)
            info = await asyncio.to_thread(provider.start_worker, launch)
        except Exception as exc:  # a provider bug must not leave the worker "initializing" forever either
            if not isinstance(exc, GpuformError):
                log.exception("starting %s failed", record.id)
            if record.state == STOPPING:
                return  # a stop requested meanwhile finalizes the record itself
            if isinstance(exc, NoCapacity):
                self._forget(record, "throttled: " + exc.message)
                self.conditions[ep.name] = Condition("NO_CAPACITY", exc.message)
            else:
                reason = exc.message if isinstance(exc, GpuformError) else f"{type(exc).__name__}: {exc}"
                self._failed(record, f"could not start: {reason}", "")
            return
        record.info, record.host, record.gpu_type = info, info.host, info.gpu_type
        record.gpus = len(info.gpu_indices) or int(ep.spec.get("gpu", {}).get("count") or 1)
        prices = self.rt.config.pools.get(record.pool, {}).get("price_per_gpu_second") or {}
        record.price = price_per_second(prices, info.gpu_type, record.gpus)
        record.mark("process_started")
        if self.condition(ep.name).status == "NO_CAPACITY":
            self.conditions[ep.name] = Condition()
        self.table.save(record)

    def _launch(self, ep: EndpointRecord, record: WorkerRecord, token: str) -> WorkerLaunch:
        spec = ep.spec
        worker = spec.get("worker") or {}
        return WorkerLaunch(
            worker_id=record.id, endpoint=ep.name, lineage=self.rt.config.lineage,
            template=worker.get("template", "custom"), image=worker.get("image"),
            command=template_argv(worker.get("template", "custom"), worker.get("command")),
            python=worker.get("python"), workdir=worker.get("workdir"), env=self.worker_env(ep, record, token),
            gpu_types=list(spec.get("gpu", {}).get("types") or ["cpu"]),
            gpu_count=int(spec.get("gpu", {}).get("count") or 1), volume_path=spec.get("volume_path"),
            keep_stopped=bool(worker.get("keep_stopped", True)), spec_revision=ep.revision)

    def worker_env(self, ep: EndpointRecord, record: WorkerRecord, token: str) -> dict[str, str]:
        """The RunPod worker protocol's variables (reference/runpod.md §5), then the endpoint's own env."""
        base = f"{self.rt.config.advertise_url}/v2/{ep.name}"
        spec, worker = ep.spec, ep.spec.get("worker") or {}
        ping_ms = max(1000, round(self.rt.config.timings.ping_interval * 1000))
        env = {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=any",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=any",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=any",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=any",
            "RUNPOD_PING_INTERVAL": str(ping_ms), "RUNPOD_POD_ID": record.id, "RUNPOD_AI_API_KEY": token,
            "RUNPOD_POD_HOSTNAME": record.id, "RUNPOD_ENDPOINT_ID": ep.name, "RUNPOD_LOG_LEVEL": "INFO",
            "GPUFORM_WORKER_EVENTS": f"{base}/worker-event/{record.id}",
            "GPUFORM_CONCURRENCY": str(worker.get("concurrency") or 1),
            "GPUFORM_TAKE_TIMEOUT": str(self.rt.config.timings.take_timeout),
        }
        if not worker.get("runpod_system_checks"):
            env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] = "true"
            env["RUNPOD_SKIP_GPU_CHECK"] = "true"
        model = spec.get("model") or {}
        if model:
            env["GPUFORM_MODEL_NAME"] = str(model.get("name"))
        if spec.get("volume_path"):
            inner = model.get("path", "").strip("/") if model else ""
            env["RUNPOD_VOLUME_PATH"] = VOLUME_MOUNT
            env["GPUFORM_MODEL_PATH"] = str(spec["volume_path"])
            env["GPUFORM_MODEL_PATH_IN_CONTAINER"] = VOLUME_MOUNT + (f"/{inner}" if inner else "")
        declared = {k: _env_str(v) for k, v in (worker.get("env") or {}).items()}
        env["GPUFORM_ENDPOINT_ENV_KEYS"] = ",".join(sorted({*declared, *ep.secret_env}))
        env.update(declared)
        env.update(ep.secret_env)
        return env

    def sleep(self, record: WorkerRecord) -> None:
        """vLLM sleep mode: the worker frees its GPU memory and stays up; it takes no jobs until woken."""
        record.state, record.asleep_since = SLEEPING, time.time()
        record.mark("sleep_requested")
        self.rt.queue.control(record.id, "sleep")
        self.table.save(record)

    def wake(self, record: WorkerRecord) -> None:
        record.state, record.waking = INITIALIZING, True
        record.timeline["wake_requested"] = time.time()
        self.rt.queue.control(record.id, "wake")
        self.table.save(record)

    def worker_event(self, record: WorkerRecord, phase: str, at: float) -> None:
        """A phase the worker reported; ``awake`` ends a wake-up, a failed sleep or wake stops the worker."""
        if phase in ("asleep", "awake"):
            record.timeline[phase] = at
        else:
            record.mark(phase, at)
        if phase == "awake" and record.waking:
            record.waking, record.state, record.idle_since, record.asleep_since = False, IDLE, at, None
            self.rt.metrics.observe(record.endpoint, "wake", at - record.timeline.get("wake_requested", at))
        elif phase in ("sleep_failed", "wake_failed"):
            self.spawn(self.stop(record, f"vLLM {phase.replace('_', ' ')}"))
        self.table.save(record)

    async def stop(self, record: WorkerRecord, reason: str, grace: float | None = None) -> None:
        if record.state in (STOPPING, STOPPED, UNHEALTHY):
            return
        record.waking = False
        record.state, record.exit_reason = STOPPING, reason
        record.mark("stop_requested")
        self.table.save(record)
        self.rt.queue.release(record.id)
        grace = self.rt.config.timings.drain_timeout if grace is None else grace
        starting = self.starting.get(record.id)
        if starting is not None:  # stopped while its start is in flight: stop what that start creates
            await asyncio.shield(starting)
        try:
            if record.info is not None:
                await asyncio.to_thread(self.provider(record.pool).stop_worker, record.info, grace)
        except GpuformError as exc:
            log.warning("stopping %s failed: %s", record.id, exc.message)
        except Exception:  # a provider bug: logged; the record is finalized all the same
            log.exception("stopping %s failed", record.id)
        self._finalize(record, STOPPED, reason)

    def _finalize(self, record: WorkerRecord, state: str, reason: str) -> None:
        now = time.time()
        record.stopped_at = now
        self.rt.ledger.accrue(record, now)  # nothing when its start failed (no info: nothing ran)
        record.state, record.exit_reason = state, reason
        lost = self.rt.queue.worker_lost(record.id, f"worker {record.id} stopped: {reason}")
        if lost:
            log.info("requeued %d job(s) of %s", len(lost), record.id)
        self.table.save(record)
        finished = sorted((w for w in self.records.values() if not w.live and w.state != STOPPING),
                          key=lambda w: w.stopped_at or 0)
        for old in finished[:-KEEP_FINISHED]:
            self.records.pop(old.id, None)
            self.by_token.pop(old.token_hash, None)

    def _forget(self, record: WorkerRecord, reason: str) -> None:
        record.state, record.exit_reason, record.stopped_at = STOPPED, reason, time.time()
        record.billed_until = record.stopped_at  # never ran: nothing to bill
        self.records.pop(record.id, None)
        self.by_token.pop(record.token_hash, None)
        self.table.save(record)

    def _failed(self, record: WorkerRecord, reason: str, log_tail: str) -> None:
        record.log_tail = log_tail
        self._finalize(record, UNHEALTHY, reason)
        cond = self.condition(record.endpoint)
        cond.failures += 1
        timings = self.rt.config.timings
        delay = min(timings.start_backoff * 2 ** (cond.failures - 1), timings.start_backoff_max)
        cond.status, cond.message, cond.log_tail = "UNHEALTHY", f"worker {record.id} {reason}", log_tail
        cond.backoff_until, cond.since = time.time() + delay, time.time()
        log.warning("worker %s unhealthy (%s); next start in %.0fs", record.id, reason, delay)

    async def observe(self, endpoint: str) -> None:
        """Compare our records with what the provider sees; a worker that vanished has crashed."""
        mine = [w for w in self.of(endpoint) if w.live and w.info is not None]
        pools = {w.pool for w in self.of(endpoint)} or set()
        seen: dict[str, WorkerInfo] = {}
        cordoned: set[str] = set()
        for pool in pools:
            try:
                infos = await asyncio.to_thread(self.provider(pool).list_workers, endpoint)
                hosts = await asyncio.to_thread(self.provider(pool).inventory)
            except GpuformError as exc:
                log.warning("cannot list workers of %s on pool %s: %s", endpoint, pool, exc.message)
                return
            seen.update({i.worker_id: i for i in infos})
            cordoned |= {h.host for h in hosts if h.cordoned}
        for record in mine:
            if record.host in cordoned and not record.stale:
                record.stale = True  # drains like a rolling release: idle now, busy after their job
        for record in mine:
            info = seen.get(record.id)
            if info is None or info.state != "running":
                await self._crashed(record, info)

    async def _crashed(self, record: WorkerRecord, info: WorkerInfo | None) -> None:
        tail = ""
        if info is not None:
            tail = await asyncio.to_thread(self.provider(record.pool).worker_logs, info, 20)
        code = f" with code {info.exit_code}" if info is not None and info.exit_code is not None else ""
        if record.ready_at is None:
            self._failed(record, f"exited{code} before it became ready", tail)
        else:
            record.log_tail = tail
            self._finalize(record, STOPPED, f"exited{code} unexpectedly; last log lines:\n{tail}")

    async def check_readiness(self, ep: EndpointRecord, now: float) -> None:
        timeout = float((ep.spec.get("worker") or {}).get("ready_timeout") or 600)
        for record in self.of(ep.name):
            if record.state == INITIALIZING and record.info is not None and now - record.requested_at > timeout:
                tail = await asyncio.to_thread(self.provider(record.pool).worker_logs, record.info, 20)
                await asyncio.to_thread(self.provider(record.pool).stop_worker, record.info, 5.0)
                self._failed(record, f"did not become ready within {timeout:g}s", tail)

    async def sweep_orphans(self, endpoint: str, pool: str) -> None:
        """Stop workers of this lineage the gateway has no record of (left by an earlier gateway)."""
        try:
            infos = await asyncio.to_thread(self.provider(pool).list_workers, endpoint)
        except GpuformError:
            return
        for info in infos:
            if info.worker_id not in self.records and info.state == "running":
                log.info("stopping orphan worker %s", info.worker_id)
                await asyncio.to_thread(self.provider(pool).stop_worker, info, 5.0)

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
