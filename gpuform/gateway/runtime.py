"""The gateway's composition root: it builds the store, queue, fleet, reconciler, ledger, metrics and
webhooks from a :class:`~gpuform.spec.RuntimeConfig` and wires their events together.

Collaborators can be given (tests pass a fake provider access, an in-memory store and a fake clock); by
default the store is the one the configuration names (:func:`open_store`: SQLite under its data directory,
or PostgreSQL) and providers come from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gpuform import __version__
from gpuform.config.schema import GATEWAY_RELOADABLE, GatewayTimings
from gpuform.errors import GatewayError, StoreError
from gpuform.gateway import backup
from gpuform.gateway.auth import KeyRing
from gpuform.gateway.fleet import Clock, Fleet, FleetSettings, ProviderAccess
from gpuform.gateway.history import RequestHistory
from gpuform.gateway.hostmetrics import HostMonitor
from gpuform.gateway.jobs import Job
from gpuform.gateway.jsonbody import safe_text
from gpuform.gateway.leader import Leadership, PostgresLeadership, SoloLeadership, current_leader
from gpuform.gateway.logs import job_fields
from gpuform.gateway.metering import Ledger, today
from gpuform.gateway.metrics import Metrics
from gpuform.gateway.queue import JobQueue
from gpuform.gateway.reconciler import Reconciler
from gpuform.gateway.replication import Replication
from gpuform.gateway.session import Sessions, derive_secret
from gpuform.gateway.sharing import Sharing
from gpuform.gateway.sqlite import SQLiteStore
from gpuform.gateway.states import JobStatus, WorkerState
from gpuform.gateway.store import GatewayStore, StoredEndpoint
from gpuform.gateway.tls import connection, worker_files
from gpuform.gateway.webhooks import Webhooks
from gpuform.provider import Provider, ProviderContext, make_provider
from gpuform.spec import EndpointSpec, RuntimeConfig

log = logging.getLogger("gpuform.gateway")
# Seconds a stopping replica drains by default: HAProxy (examples/ha) checks every 1 s and marks a replica down
# after 2 failed checks, so after 3 s no new request is sent to it.
REPLICA_SHUTDOWN_DELAY = 3.0
# Threads for blocking provider calls (SSH, Docker, logs): each call to a lost host holds one for its connect
# timeout, so the default pool (cores + 4) let a few of them queue the starts on the healthy hosts behind them.
IO_THREADS = 32


@dataclass
class EndpointRecord:
    name: str
    spec: EndpointSpec
    secret_env: dict[str, str]
    revision: str
    deleting: bool = False

    @property
    def model_name(self) -> str | None:
        return self.spec.model_name

    def allows(self, key_name: str | None) -> bool:
        allowed = self.spec.api_keys
        return key_name is not None and (allowed is None or key_name in allowed)


class Providers:
    """Each pool's provider, made once from the configuration (:data:`~gpuform.gateway.fleet.ProviderAccess`)."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self._made: dict[str, Provider] = {}
        self._retired: list[Provider] = []

    def __call__(self, pool: str) -> Provider:
        if pool not in self._made:
            attrs = self.config.pools.get(pool)
            if attrs is None:
                raise GatewayError(f"the gateway has no configuration for pool {pool}",
                                   "Run `gpuform apply` so the gateway learns its pools.")
            ctx = ProviderContext(self.config.lineage, Path(self.config.state_dir), Path(self.config.config_dir),
                                  progress=functools.partial(log.info, "pool %s: %s", pool))
            self._made[pool] = make_provider(pool, attrs, ctx)
        return self._made[pool]

    def close(self) -> None:
        for provider in [*self._made.values(), *self._retired]:
            provider.close()

    def reconfigure(self, config: RuntimeConfig) -> None:
        """Take ``config``'s pools: a pool whose settings changed gets a new provider on next use (the old one
        is closed with the rest at stop, not now: a start may be using it in a thread)."""
        old, self.config = self.config.pools, config
        for pool in [p for p in self._made if old.get(p) != config.pools.get(p)]:
            self._retired.append(self._made.pop(pool))


def open_store(config: RuntimeConfig) -> GatewayStore:
    """The store the configuration names: a SQLite file under the data directory, or a PostgreSQL schema
    (refused when another deployment's gateway wrote it)."""
    key = config.secrets_key or config.admin_key_hash
    declared = config.gateway.store
    if declared.type == "sqlite":
        path = config.data_path / "gateway.db"
        if backup.take_staged(path):
            log.warning("gateway %s took the restored database (the one it replaced: %s%s)", config.name, path,
                        backup.REPLACED)
        return SQLiteStore(path, key)
    from gpuform.gateway.postgres import PostgresStore, default_schema

    if not config.store_url:
        raise StoreError(f"gateway {config.name} has a postgres store but its configuration has no URL",
                         "Run `gpuform apply` again: it writes the store's URL into the gateway's configuration.")
    store = PostgresStore(config.store_url, declared.schema_name or default_schema(config.name), key)
    owner = store.get_meta("lineage")
    if owner not in (None, config.lineage):
        where = store.db.where
        store.close()
        raise StoreError(f"the gateway database ({where}) belongs to another gpuform deployment",
                         "Give this gateway a schema of its own (`store.schema_name`), or drop that schema if "
                         "its deployment is gone.")
    return store


def make_queue(store: GatewayStore, timings: GatewayTimings, clock: Clock) -> JobQueue:
    """The job queue for ``store``: shared by every replica in PostgreSQL, else this process's own."""
    postgres = sys.modules.get("gpuform.gateway.postgres")  # not imported: the store is not a PostgresStore
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        from gpuform.gateway.shared_queue import SharedJobQueue

        return SharedJobQueue(store, timings, clock)
    return JobQueue(store.jobs, timings, clock)


def replica_id(config: RuntimeConfig) -> str:
    """This gateway process's name among its replicas (the configuration's, else host and process id)."""
    return config.replica_id or f"{socket.gethostname()}:{os.getpid()}"


def make_leadership(config: RuntimeConfig, store: GatewayStore) -> tuple[Leadership, Sharing | None]:
    """A PostgreSQL store is shared by replicas: leadership by its advisory lock, worker starts fenced by the
    leader's epoch. Any other store has one gateway, which always leads."""
    if "gpuform.gateway.postgres" not in sys.modules:  # no postgres store was made: the driver stays unloaded
        return SoloLeadership(replica_id(config)), None
    from gpuform.gateway.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        return SoloLeadership(replica_id(config)), None
    leadership = PostgresLeadership(store.db.url, store.db.schema, replica_id(config))
    return leadership, Sharing(store.workers, lambda: leadership.epoch, store.endpoints)


def _reason(job: Job) -> str:
    error = job.error.get("error_message", job.error) if isinstance(job.error, dict) else job.error
    return safe_text(str(error or "no reason given"), 300)


def restart_fields(old: RuntimeConfig, new: RuntimeConfig) -> list[str]:
    """What differs between two configurations that a running gateway cannot take by reloading (its port,
    store, directories, edge limits, build…): a change there needs a restart."""
    def fixed(config: RuntimeConfig) -> dict[str, Any]:
        top = config.model_dump(mode="json", exclude={"gateway", "host_pools", "webhook_secret"})
        declared = config.gateway.model_dump(mode="json", exclude=set(GATEWAY_RELOADABLE))
        return {**top, **{f"gateway.{k}": v for k, v in declared.items()}}
    before, after = fixed(old), fixed(new)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class Runtime:
    def __init__(self, config: RuntimeConfig, store: GatewayStore | None = None,
                 providers: ProviderAccess | None = None, clock: Clock = time.time,
                 webhook_transport: httpx.AsyncBaseTransport | None = None,
                 config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # where the configuration was read from (re-read by a hot reload)
        self.on_restart: Callable[[], None] | None = None  # set by the server: exit for the supervisor to restart
        self.draining = False  # stopping: /healthz answers 503 until the port closes
        self.clock = clock
        self.started_at = clock()
        self.store: GatewayStore = store if store is not None else open_store(config)
        self.keys = KeyRing(config.lineage, config.admin_key_hash, dict(config.gateway.api_keys))
        self.sessions = Sessions(derive_secret(config.lineage, config.secrets_key, config.admin_key_hash))
        self.endpoints: dict[str, EndpointRecord] = {
            name: EndpointRecord(name, found.spec, found.secret_env, found.revision)
            for name, found in self.store.endpoints.all().items()}
        self.store.set_meta("lineage", config.lineage)
        self._providers = providers if providers is not None else Providers(config)
        self.metrics = Metrics()
        self.ledger = Ledger(self.store.ledger, lambda e: self.metrics.billed(e.endpoint, e.gpu_type, e.gpus,
                                                                               e.seconds, e.cost))
        timings = config.timings
        self.queue = make_queue(self.store, timings, clock)
        self.history = RequestHistory(self.store.history, timings.request_history, clock)
        settings = FleetSettings(config.lineage, config.advertise_url, timings,
                                 {name: dict(pool.price_per_gpu_second) for name, pool in config.pools.items()},
                                 worker_files(config.tls), connection(config.tls, config.advertise_url),
                                 config.gateway.logs, tuple(config.replica_urls))
        self.leadership, sharing = make_leadership(config, self.store)
        self.fleet = Fleet(settings, self.store.workers, self._providers, self.queue, self.ledger, self.metrics,
                           self.keys.token_hash, clock, sharing)
        self._leading: asyncio.Task[None] | None = None
        self.webhooks = Webhooks(timings, config.webhook_secret, webhook_transport, config.gateway.webhooks)
        self.reconciler = Reconciler(lambda: list(self.endpoints.values()), self.fleet, self.queue, self.ledger,
                                     self.metrics, timings.reconcile_interval, clock, lambda: self.leadership.leading)
        self.hosts = HostMonitor(config.pools, self._providers, self.fleet, self.metrics,
                                 timings.host_metrics_interval)
        self.queue.on_started.append(self._job_started)
        self.queue.on_finished.append(self._job_finished)
        self.queue.on_stop_worker.append(self._stop_worker)
        self.queue.condition_of = self._condition_text
        self.queue.on_unserved.append(self._unserved)
        self.queue.on_sweep.append(self.history.prune)
        self.replication: Replication | None = None  # replicas: what this one takes from the others' records
        if sharing is not None and sharing.endpoints is not None:  # a lone gateway's ticks read nothing more
            self.replication = Replication(self, sharing.endpoints)
            self.reconciler.pull, self.reconciler.publish = self.replication.pull, self.replication.publish

    def reload(self, config: RuntimeConfig) -> list[str]:
        """Take ``config`` without a restart: keys, timings, the pools driven and the webhook policy.
        Returns the declared fields that changed; raises GatewayError (nothing taken) when a field that needs a
        restart differs, or the configuration is another gateway's."""
        if (config.name, config.lineage) != (self.config.name, self.config.lineage):
            raise GatewayError(f"the configuration is for gateway {config.name} of another deployment",
                               "Run `gpuform apply` from the configuration that created this gateway.")
        fixed = restart_fields(self.config, config)
        if fixed:
            raise GatewayError(f"changed fields need a restart: {', '.join(fixed)}",
                               "`gpuform apply` restarts the gateway for them.")
        changed = sorted(k for k in GATEWAY_RELOADABLE
                         if getattr(self.config.gateway, k) != getattr(config.gateway, k))
        self.config = config
        self.keys.replace(config.admin_key_hash, dict(config.gateway.api_keys))
        self._take_timings(config)
        if isinstance(self._providers, Providers):
            self._providers.reconfigure(config)
        log.info("gateway %s reloaded its configuration: %s", config.name, ", ".join(changed) or "no change")
        return changed

    def _take_timings(self, config: RuntimeConfig) -> None:
        timings = config.timings
        self.queue.timings = timings
        self.history.retention = timings.request_history
        self.fleet.settings = FleetSettings(config.lineage, config.advertise_url, timings,
                                            {n: dict(p.price_per_gpu_second) for n, p in config.pools.items()})
        self.webhooks.timings, self.webhooks.secret = timings, config.webhook_secret
        self.webhooks.policy = config.gateway.webhooks
        self.reconciler.interval = timings.reconcile_interval

    def shutdown_delay(self) -> float:
        """Seconds a stopping replica drains before its port closes (``timings.shutdown_delay``)."""
        delay = self.config.timings.shutdown_delay
        if delay is not None:
            return delay
        return REPLICA_SHUTDOWN_DELAY if self.config.replica_urls else 0.0

    def begin_draining(self) -> None:
        """Called from the signal handler of a replica that is stopping: /healthz answers 503 so the load
        balancer takes it out, long-polls answer now and workers' takes are sent to another replica; requests
        are still served until the port closes."""
        self.draining = True
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        """Called from the signal handler: wake every long-poll so connections close promptly."""
        loop = self.queue.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.queue.close)

    async def start(self, reconcile: bool = True) -> None:
        """Restore open jobs and workers, then run the reconcile loop (or, with ``reconcile=False``, let the
        caller drive ticks: the reconciler acts on decisions but has no loop of its own)."""
        self.queue.loop = asyncio.get_running_loop()
        self.queue.loop.set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="gpuform-io"))
        restored = self.queue.restore()
        if self.fleet.sharing is None:  # replicas: the leader adopts the workers when it leads
            self.fleet.restore()
        for ep in self.endpoints.values():  # workers of an earlier revision or connection (TLS turned on) go
            self.fleet.mark_stale(ep)
        for job in self.queue.running_jobs():
            if job.worker_id:
                self.fleet.job_started(job.worker_id, job.id, job.started_at or self.clock())
        log.info("gateway %s up: %d endpoint(s), %d open job(s), %d live worker(s)", self.config.name,
                 len(self.endpoints), restored, len(self.fleet.records))
        self.webhooks.start()
        if reconcile or self.fleet.sharing is not None:  # a test driving ticks still competes for leadership
            self._leading = asyncio.get_running_loop().create_task(
                self.leadership.run(self.reconciler.lead, self.reconciler.follow))
        if reconcile:
            self.reconciler.start()
            self.hosts.start()
        else:
            self.reconciler.active = True

    async def stop(self) -> None:
        await self.hosts.stop()
        await self.reconciler.stop()
        if self._leading is not None:
            self._leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leading
        await self.webhooks.stop()
        for task in list(self.fleet.tasks):
            task.cancel()
        if isinstance(self._providers, Providers):
            self._providers.close()
        self.queue.dispose()
        self.store.close()

    # ---- queue listeners ----------------------------------------------------------------------------

    def _job_started(self, job: Job) -> None:
        if job.worker_id:
            self.fleet.job_started(job.worker_id, job.id, job.started_at or self.clock())
        delay = (job.started_at or 0) - job.created_at
        self.metrics.delay.labels(job.endpoint).observe(delay)
        self.metrics.observe(job.endpoint, "delay", delay)

    def _job_finished(self, job: Job) -> None:
        self.fleet.job_finished(job.worker_id, job.id, job.completed_at or self.clock())
        self.metrics.requests.labels(job.endpoint, job.status).inc()
        execution = 0.0
        if job.started_at is not None:
            execution = (job.completed_at or 0) - job.started_at
            self.metrics.execution.labels(job.endpoint).observe(execution)
            self.metrics.observe(job.endpoint, "execution", execution)
        if not self.queue.records_finish:  # a shared queue wrote both rows in its finish statement
            self.store.jobs.count_usage(job.owner or "", job.endpoint, today(job.completed_at or self.clock()),
                                        job.status != JobStatus.COMPLETED, execution)
        if job.status != JobStatus.COMPLETED:
            log.info("job %s on %s ended %s: %s", job.id, job.endpoint, job.status, _reason(job), extra=job_fields(job))
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("job %s on %s completed in %.3fs", job.id, job.endpoint, execution, extra=job_fields(job))
        if job.webhook:
            self.webhooks.deliver(job.webhook, job.view(), job_fields(job))
        if not self.queue.records_finish:
            self.history.record(job)

    def _unserved(self, endpoint: str) -> None:
        ep = self.endpoints.get(endpoint)
        if ep is not None and not self.fleet.live_count(endpoint):
            self.reconciler.scale_now(ep)  # scale from zero now rather than at the next tick

    def _condition_text(self, endpoint: str) -> str:
        """The endpoint's condition for a client's message: never the workers' log lines (admin only), and
        what a worker may have written (a failure reason) made safe."""
        cond = self.fleet.condition(endpoint)
        if cond.status == "OK":
            return ""
        return f"endpoint {endpoint} is {cond.status}: {safe_text(cond.message, 300)}"

    def _stop_worker(self, worker_id: str, reason: str) -> None:
        worker = self.fleet.records.get(worker_id)
        if worker is not None and worker.live:
            self.fleet.spawn(self.fleet.stop(worker, reason))

    # ---- endpoints ----------------------------------------------------------------------------------

    def put_endpoint(self, name: str, spec: EndpointSpec, secret_env: dict[str, str], revision: str) -> None:
        stored = StoredEndpoint(spec, secret_env, revision)
        self.store.endpoints.put(name, stored)
        self.take_endpoint(name, stored)

    def sync_endpoints(self) -> None:
        """Replicas: take the endpoint changes other replicas stored, now (one query; the admin API's endpoint
        routes call it, so `gpuform apply` and `plan` see one gateway whichever replica answers them)."""
        if self.replication is not None:
            self.replication.take_endpoints(self.leadership.leading)

    def take_endpoint(self, name: str, stored: StoredEndpoint) -> None:
        """Serve ``name`` as stored (put here, or through another replica). Only the leader acts on the stale
        flags: it retires the workers of an earlier revision, once."""
        self.endpoints[name] = EndpointRecord(name, stored.spec, stored.secret_env, stored.revision)
        self.fleet.mark_stale(self.endpoints[name])  # rolling release: idle ones go now, busy ones after their job

    async def delete_endpoint(self, name: str, drain_timeout: float) -> None:
        """Stop taking work, let running jobs finish for up to ``drain_timeout``, fail the rest, stop workers.
        A follower leaves the stops to the leader (it sees the endpoint gone at its next tick) and waits for
        them."""
        self.endpoints[name].deleting = True
        replication = self.replication
        if replication is None:
            await self._remove(name, drain_timeout)
            return
        replication.removing.add(name)
        try:
            replication.rows.mark_deleting(name)  # every replica stops taking work for it at its next tick
            await self._remove(name, drain_timeout)
        finally:
            replication.removing.discard(name)

    async def _remove(self, name: str, drain_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.queue.stats(name).running and loop.time() < deadline:
            await asyncio.sleep(0.2)
        failed = self.queue.fail_endpoint(name, f"endpoint {name} was removed (drained for {drain_timeout:g}s)")
        if failed:
            log.info("endpoint %s removed: %d open job(s) failed", name, failed)
        if self.replication is not None and not self.leadership.leading:
            self.store.endpoints.delete(name)
            await self.replication.stopped_by_leader(name)
        else:
            self.fleet.refresh()  # replicas: every worker the store has, whichever replica started it
            stops = [self.fleet.stop(w, "endpoint removed", grace=5.0) for w in self.fleet.of(name) if w.live]
            await asyncio.gather(*stops)
            self.store.endpoints.delete(name)
        self.endpoints.pop(name, None)
        self.metrics.forget_endpoint(name)

    def endpoint_by_model(self, model: str) -> EndpointRecord | None:
        """The endpoint serving ``model``: its model's name, or one of its LoRA adapters."""
        return next((ep for ep in self.endpoints.values() if model in ep.spec.served_names and not ep.deleting),
                    None)

    # ---- status -------------------------------------------------------------------------------------

    def health(self, name: str) -> dict[str, Any]:
        """RunPod's /health body, plus the endpoint's condition (why workers are missing, if they are)."""
        counts = self.store.jobs.counts(name)
        stats = self.queue.stats(name)
        shown = (WorkerState.IDLE, WorkerState.RUNNING, WorkerState.INITIALIZING, WorkerState.STOPPING,
                 WorkerState.UNHEALTHY)
        workers = {str(state): 0 for state in shown}
        for w in self.fleet.of(name):
            if w.state in shown:
                workers[w.state] += 1
        cond = self.fleet.condition(name)
        return {"jobs": {"completed": counts.get("COMPLETED", 0), "failed": counts.get("FAILED", 0),
                         "inProgress": stats.running, "inQueue": stats.queued,
                         "retried": counts.get("_retried", 0) + self.queue.requeued.get(name, 0)},
                "workers": workers, "status": cond.status, "condition": cond.to_json(self.clock())}

    def endpoint_status(self, name: str) -> dict[str, Any]:
        ep = self.endpoints.get(name)
        decision = self.reconciler.decisions.get(name)
        out = self.health(name)
        out["revision"] = ep.revision if ep else None
        out["desired_workers"] = decision.desired if decision else None
        out["scaling_notes"] = list(decision.reasons) if decision else []
        out["worker_list"] = [w.to_json() for w in self.fleet.of(name)]
        out["metrics"] = {kind: self.metrics.percentiles(name, kind) for kind in ("delay", "execution", "cold_start")}
        out["spent_today"] = self.ledger.spent(name, today(self.clock()))
        out["ready_workers"] = sum(1 for w in self.fleet.of(name) if w.state in (WorkerState.IDLE,
                                                                                  WorkerState.RUNNING))
        return out

    def status(self) -> dict[str, Any]:
        return {"gateway": self.config.name, "lineage": self.config.lineage, "started_at": self.started_at,
                "version": __version__, "replica": self.replica_status(),
                "endpoints": {n: self.endpoint_status(n) for n in sorted(self.endpoints)}}

    def replica_status(self) -> dict[str, Any]:
        """This replica (its id, whether it leads, its epoch) and the leader the store records."""
        out = self.leadership.status()
        recorded = getattr(self.store, "leadership", None)
        if callable(recorded):
            leader = current_leader(recorded())
            out["current_leader"] = leader.to_json() if leader is not None else None
        return out
