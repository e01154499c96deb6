"""The gateway's in-process state: configuration, store, endpoints, queue, workers, ledger and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from gpuform.gateway.auth import KeyRing
from gpuform.gateway.config import RuntimeConfig
from gpuform.gateway.db import Database
from gpuform.gateway.fleet import Fleet
from gpuform.gateway.jobs import Job, JobStore
from gpuform.gateway.metering import Ledger, today
from gpuform.gateway.metrics import Metrics
from gpuform.gateway.queue import JobQueue
from gpuform.gateway.reconciler import Reconciler
from gpuform.gateway.webhooks import Webhooks

log = logging.getLogger("gpuform.gateway")


@dataclass
class EndpointRecord:
    name: str
    spec: dict[str, Any]
    secret_env: dict[str, str]
    revision: str
    deleting: bool = False

    @property
    def model_name(self) -> str | None:
        model = self.spec.get("model") or {}
        return str(model["name"]) if model.get("name") else None

    def allows(self, key_name: str | None) -> bool:
        allowed = self.spec.get("api_keys")
        return key_name is not None and (allowed is None or key_name in allowed)


class Runtime:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self.db = Database(config.data_dir / "gateway.db")
        self.keys = KeyRing(config.lineage, config.admin_key_hash, dict(config.gateway.api_keys))
        self.endpoints: dict[str, EndpointRecord] = {
            name: EndpointRecord(name, spec, env, rev) for name, (spec, env, rev) in self.db.endpoints().items()}
        self.db.set_meta("lineage", config.lineage)
        self.metrics = Metrics()
        self.ledger = Ledger(self.db)
        self.queue = JobQueue(JobStore(self.db), config.timings)
        self.fleet = Fleet(self)
        self.webhooks = Webhooks(config.timings, config.webhook_secret)
        self.reconciler = Reconciler(self)
        self.queue.on_started.append(self._job_started)
        self.queue.on_finished.append(self._job_finished)
        self.queue.on_stop_worker.append(self._stop_worker)
        self.queue.condition_of = self._condition_text
        self.queue.on_unserved.append(self._unserved)

    def begin_shutdown(self) -> None:
        """Called from the signal handler: wake every long-poll so connections close promptly."""
        loop = self.queue.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.queue.close)

    async def start(self) -> None:
        self.queue.loop = asyncio.get_running_loop()
        restored = self.queue.restore()
        self.fleet.restore()
        for job in (j for table in self.queue.running.values() for j in table.values()):
            if job.worker_id:
                self.fleet.job_started(job.worker_id, job.id, job.started_at or time.time())
        log.info("gateway %s up: %d endpoint(s), %d open job(s), %d live worker(s)", self.config.name,
                 len(self.endpoints), restored, len(self.fleet.records))
        self.webhooks.start()
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()
        await self.webhooks.stop()
        for task in list(self.fleet.tasks):
            task.cancel()
        self.fleet.close()
        self.db.close()

    # ---- queue listeners ----------------------------------------------------------------------------

    def _job_started(self, job: Job) -> None:
        if job.worker_id:
            self.fleet.job_started(job.worker_id, job.id, job.started_at or time.time())
        delay = (job.started_at or 0) - job.created_at
        self.metrics.delay.labels(job.endpoint).observe(delay)
        self.metrics.observe(job.endpoint, "delay", delay)

    def _job_finished(self, job: Job) -> None:
        self.fleet.job_finished(job.worker_id, job.id, job.completed_at or time.time())
        self.metrics.requests.labels(job.endpoint, job.status).inc()
        if job.started_at is not None:
            execution = (job.completed_at or 0) - job.started_at
            self.metrics.execution.labels(job.endpoint).observe(execution)
            self.metrics.observe(job.endpoint, "execution", execution)
        if job.webhook:
            self.webhooks.deliver(job.webhook, job.view())

    def _unserved(self, endpoint: str) -> None:
        if not any(w.live for w in self.fleet.of(endpoint)):
            self.reconciler.scale_now(endpoint)  # scale from zero now rather than at the next tick

    def _condition_text(self, endpoint: str) -> str:
        cond = self.fleet.condition(endpoint)
        if cond.status == "OK":
            return ""
        tail = f"; last log lines: {cond.log_tail}" if cond.log_tail else ""
        return f"endpoint {endpoint} is {cond.status}: {cond.message}{tail}"

    def _stop_worker(self, worker_id: str, reason: str) -> None:
        worker = self.fleet.records.get(worker_id)
        if worker is not None and worker.live:
            self.fleet.spawn(self.fleet.stop(worker, reason))

    # ---- endpoints ----------------------------------------------------------------------------------

    async def put_endpoint(self, name: str, spec: dict[str, Any], secret_env: dict[str, str], revision: str) -> None:
        self.db.put_endpoint(name, spec, secret_env, revision)
        self.endpoints[name] = EndpointRecord(name, spec, secret_env, revision)
        for worker in self.fleet.of(name):
            worker.stale = worker.revision != revision  # rolling release: idle ones go now, busy ones after their job

    async def delete_endpoint(self, name: str, drain_timeout: float) -> None:
        """Stop taking work, let running jobs finish for up to ``drain_timeout``, fail the rest, stop workers."""
        ep = self.endpoints[name]
        ep.deleting = True
        deadline = time.monotonic() + drain_timeout
        while self.queue.stats(name).running and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        failed = self.queue.fail_endpoint(name, f"endpoint {name} was removed (drained for {drain_timeout:g}s)")
        if failed:
            log.info("endpoint %s removed: %d open job(s) failed", name, failed)
        stops = [self.fleet.stop(w, "endpoint removed", grace=5.0) for w in self.fleet.of(name) if w.live]
        await asyncio.gather(*stops)
        self.db.delete_endpoint(name)
        self.endpoints.pop(name, None)

    def endpoint_by_model(self, model: str) -> EndpointRecord | None:
        return next((ep for ep in self.endpoints.values() if ep.model_name == model and not ep.deleting), None)

    # ---- status -------------------------------------------------------------------------------------

    def health(self, name: str) -> dict[str, Any]:
        """RunPod's /health body, plus the endpoint's condition (why workers are missing, if they are)."""
        counts = self.queue.store.counts(name)
        stats = self.queue.stats(name)
        workers = {"idle": 0, "running": 0, "initializing": 0, "stopping": 0, "unhealthy": 0}
        for w in self.fleet.of(name):
            if w.state in workers:
                workers[w.state] += 1
        cond = self.fleet.condition(name)
        return {"jobs": {"completed": counts.get("COMPLETED", 0), "failed": counts.get("FAILED", 0),
                         "inProgress": stats.running, "inQueue": stats.queued,
                         "retried": counts.get("_retried", 0) + self.queue.requeued.get(name, 0)},
                "workers": workers, "status": cond.status, "condition": cond.to_json()}

    def endpoint_status(self, name: str) -> dict[str, Any]:
        ep = self.endpoints.get(name)
        decision = self.reconciler.decisions.get(name)
        out = self.health(name)
        out["revision"] = ep.revision if ep else None
        out["desired_workers"] = decision.desired if decision else None
        out["scaling_notes"] = list(decision.reasons) if decision else []
        out["worker_list"] = [w.to_json() for w in self.fleet.of(name)]
        out["metrics"] = {kind: self.metrics.percentiles(name, kind) for kind in ("delay", "execution", "cold_start")}
        out["spent_today"] = self.ledger.spent(name, today(time.time()))
        out["ready_workers"] = sum(1 for w in self.fleet.of(name) if w.state in ("idle", "running"))
        return out

    def status(self) -> dict[str, Any]:
        return {"gateway": self.config.name, "lineage": self.config.lineage, "started_at": self.started_at,
                "endpoints": {n: self.endpoint_status(n) for n in sorted(self.endpoints)}}
