"""How each resource kind is read, created, updated and deleted, through providers and the gateway.

Handlers are the only place where the control plane does I/O for a resource. Each external call is wrapped
in fault points (see :mod:`gpuform.faults`) so crash tests can interrupt apply around every one of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gpuform import faults
from gpuform.config.schema import GATEWAY_RELOADABLE, GatewayTls, ResourceKind
from gpuform.config.tls import resolved as resolved_tls
from gpuform.engine import ledgers
from gpuform.engine.context import Workspace
from gpuform.errors import GatewayError, GpuformError
from gpuform.gateway.client import AdminClient
from gpuform.gateway.replicas import Replica, layout, pool_hosts, recorded, replica_key
from gpuform.plan.model import Observed
from gpuform.provider import (
    GatewayHost,
    HostInventory,
    Provider,
    VolumeHost,
    VolumeSpec,
    gateway_host,
    volume_host,
)
from gpuform.resources.desired import Desired, current_attributes
from gpuform.spec import EndpointSpec, GatewaySettings, RuntimeConfig
from gpuform.state.model import ResourceState, State
from gpuform.util.hashing import deployment_id, hash_secret

T = TypeVar("T")
GATEWAY_START_TIMEOUT = 60.0
# Seconds apply waits after a (re)started replica is healthy before it stops the next one: longer than a load
# balancer takes to see it healthy again (examples/ha/haproxy.cfg: checks every 1 s, up after 2 passes).
REPLICA_SETTLE = 3.0


@dataclass
class Op:
    """One operation's view: the workspace, the state as it stands, and the desired resources."""

    ws: Workspace
    state: State
    desired: dict[str, Desired]
    registered: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # gateway -> its endpoints

    def registered_endpoint(self, gateway: str, name: str) -> dict[str, Any] | None:
        """The endpoint as its gateway has it: from the one listing refresh fetched, else asked alone."""
        listing = self.registered.get(gateway)
        if listing is not None:
            return listing.get(name)
        with self.admin(gateway) as admin:
            return admin.get_endpoint(name)

    @property
    def lineage(self) -> str:
        return self.state.lineage

    def pool_attrs(self, pool: str) -> dict[str, Any]:
        want = self.desired.get(f"pool.{pool}")
        if want is not None:
            return want.real_attributes()
        res = self.state.resources.get(f"pool.{pool}")
        if res is None:
            raise GpuformError(f"pool.{pool} is neither configured nor in the state",
                               "Declare the pool again, or remove what uses it with `gpuform state rm`.")
        return res.attributes

    def provider(self, pool: str) -> Provider:
        return self.ws.provider(pool, self.pool_attrs(pool), self.lineage)

    def replica_admins(self, gateway: str) -> list[AdminClient]:
        """An admin client for each replica the state records (the advertised URL alone for one replica):
        what every replica must hold, such as an endpoint, is sent to each."""
        res = self.state.resources.get(f"gateway.{gateway}")
        rows = recorded(res.computed, str(res.attributes["advertise_url"])) if res else []
        if len(rows) < 2:
            return [self.admin(gateway)]
        assert res is not None
        want = self.desired.get(f"gateway.{gateway}")
        key = self.ws.admin_key(gateway, want.secrets.get(("admin_key",)) if want else None, create=False)
        return [self.ws.admin_client(str(r["url"]), key, self.ws.client_tls(res.attributes)) for r in rows]

    def admin(self, gateway: str) -> AdminClient:
        res = self.state.resources.get(f"gateway.{gateway}")
        want = self.desired.get(f"gateway.{gateway}")
        attrs = res.attributes if res else (want.attributes if want else None)
        if attrs is None:
            raise GatewayError(f"gateway.{gateway} is not in the state", "Run `gpuform apply` to create it.")
        configured = want.secrets.get(("admin_key",)) if want else None
        key = self.ws.admin_key(gateway, configured, create=False)
        replicas = recorded(res.computed, str(attrs["advertise_url"])) if res else []
        return self.ws.admin_client(str(attrs["advertise_url"]), key, self.ws.client_tls(attrs),
                                    tuple(str(r["url"]) for r in replicas))  # a replica down: another answers


def call(fn: Callable[..., T], *args: Any) -> T:
    """Run one provider or gateway call between fault points."""
    faults.point("before-provider-call")
    result = fn(*args)
    faults.point("after-provider-call")
    return result


class Handler(Protocol):
    def read(self, op: Op, prior: ResourceState) -> Observed: ...

    def create(self, op: Op, want: Desired) -> dict[str, Any]: ...

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]: ...

    def delete(self, op: Op, prior: ResourceState) -> None: ...


class PoolHandler:
    def read(self, op: Op, prior: ResourceState) -> Observed:
        provider = op.provider(prior.name)
        found = provider.read_pool() or {}
        hosts = [_host_json(h) for h in provider.inventory()]
        notes = [f"host {h['name']} unreachable: {h['reason']}" for h in hosts if not h["reachable"]]
        return Observed(True, {}, {**found, "hosts": hosts}, notes)

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        provider = op.provider(want.name)
        computed = call(provider.create_pool)
        return {**computed, "hosts": [_host_json(h) for h in provider.inventory()]}

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        return self.create(op, want)

    def delete(self, op: Op, prior: ResourceState) -> None:
        call(op.provider(prior.name).delete_pool)  # which fails when a worker of this deployment still runs


def _host_json(h: HostInventory) -> dict[str, Any]:
    return {"name": h.host, "reachable": h.reachable, "reason": h.reason, "cordoned": h.cordoned,
            "gpus": [{"index": g.index, "type": g.type, "name": g.name, "memory_mib": g.memory_mib,
                      "uuid": g.uuid} for g in h.gpus]}


class PolicyHandler:
    """Policies are data for the gateway; endpoints carry their resolved schedule."""

    def read(self, op: Op, prior: ResourceState) -> Observed:
        return Observed(True)

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        return {}

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        return {}

    def delete(self, op: Op, prior: ResourceState) -> None:
        return None


class VolumeHandler:
    """Volumes live on the hosts of their pool, whose provider must be able to stage them."""

    def _host(self, op: Op, attrs: dict[str, Any]) -> VolumeHost:
        pool = str(attrs["pool"])
        return volume_host(op.provider(pool), pool)

    def read(self, op: Op, prior: ResourceState) -> Observed:
        found = self._host(op, prior.attributes).read_volume(prior.name, VolumeSpec.model_validate(prior.attributes))
        if found is None:
            return Observed(False)
        declared = {k: v for k, v in found.attributes.items() if k in prior.attributes}
        computed = {k: v for k, v in found.attributes.items() if k not in prior.attributes}
        return Observed(True, declared, computed, found.notes, repair=found.repair)

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        return call(self._host(op, want.attributes).stage_volume, want.name,
                    VolumeSpec.model_validate(want.attributes))

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        return self.create(op, want)

    def delete(self, op: Op, prior: ResourceState) -> None:
        call(self._host(op, prior.attributes).remove_volume, prior.name, VolumeSpec.model_validate(prior.attributes))


class GatewayHandler:
    """The gateway's replicas are supervised by its pool's provider (replica i under
    :func:`~gpuform.gateway.replicas.replica_key`); their configuration is read back over HTTP. Starts,
    restarts and reloads go replica by replica, each healthy before the next, so clients behind a load
    balancer (or workers failing over) always find one answering."""

    def _host(self, op: Op, attrs: dict[str, Any]) -> GatewayHost:
        pool = str(attrs["pool"])
        return gateway_host(op.provider(pool), pool)

    def _client(self, op: Op, name: str, url: str, attrs: dict[str, Any], secrets: Desired | None) -> AdminClient:
        key = op.ws.admin_key(name, secrets.secrets.get(("admin_key",)) if secrets else None, create=False)
        return op.ws.admin_client(url, key, op.ws.client_tls(attrs))

    def read(self, op: Op, prior: ResourceState) -> Observed:
        """Each recorded replica must run and answer /healthz as this deployment's; one that does not is a
        repair (the plan restarts it), all of them gone is a gateway gone."""
        host, rows, down = self._host(op, prior.attributes), [], []
        for row in recorded(prior.computed, str(prior.attributes["advertise_url"])):
            found = host.read_gateway(replica_key(prior.name, int(row["id"][1:])))
            problem = self._problem(op, row, found, prior.attributes)
            rows.append({**row, **(found or {}), "up": problem is None})
            down += [problem] if problem else []
        live = [r for r in rows if r["up"]]
        if not live:
            return Observed(False, notes=[d for d in down if "/healthz" in d])
        with self._client(op, prior.name, live[0]["url"], prior.attributes, op.desired.get(prior.address)) as admin:
            info = admin.info()
        attributes = {k: v for k, v in dict(info.get("attributes") or {}).items() if k in prior.attributes}
        computed = {**_head(rows[0]), "version": info.get("version"), "replica_set": rows}
        return Observed(True, attributes, computed, repair=down)

    def _problem(self, op: Op, row: dict[str, Any], found: dict[str, Any] | None, attrs: dict[str, Any]) -> str | None:
        if found is None:
            return f"replica {row['id']} on {row.get('host', 'local')} is not running"
        if not self._answers(op, str(row["url"]), attrs):
            return f"replica {row['id']} at {row['url']} does not answer /healthz"
        return None

    def _answers(self, op: Op, url: str, attrs: dict[str, Any]) -> bool:
        with AdminClient(url, None, tls=op.ws.client_tls(attrs)) as probe:
            health = probe.healthy()
        return health is not None and health.get("deployment") == deployment_id(op.lineage)

    def _replicas(self, op: Op, want: Desired) -> list[Replica]:
        hosts = pool_hosts(op.pool_attrs(str(want.attributes["pool"])))
        try:
            return layout(want.attributes, hosts)
        except ValueError as exc:
            raise GatewayError(f"{want.address}: {exc}", "Add hosts to the pool, or lower replicas.") from exc

    def _runtime_config(self, op: Op, want: Desired, replica: Replica, replicas: list[Replica]) -> RuntimeConfig:
        key = op.ws.admin_key(want.name, want.secrets.get(("admin_key",)), create=True)
        assert key is not None
        listen = replica.listen if replica.listen != want.attributes["listen"] else None
        return RuntimeConfig(name=want.name, lineage=op.lineage,
                             gateway=GatewaySettings.model_validate(want.attributes),
                             host_pools=GatewaySettings.model_validate(want.real_attributes()).pools,
                             admin_key_hash=hash_secret(key, op.lineage), secrets_key=op.ws.store_key(want.name),
                             state_dir=str(op.ws.runtime_dir(op.lineage)),
                             config_dir=str(op.ws.config_dir), webhook_secret=want.secrets.get(("webhook_secret",)),
                             store_url=want.secrets.get(("store", "url")),
                             host_tls=self._tls_here(op, want), replica_id=replica.id,
                             replica_urls=[r.url for r in replicas] if len(replicas) > 1 else [],
                             replica_listen=listen)

    @staticmethod
    def _tls_here(op: Op, want: Desired) -> GatewayTls | None:
        """The TLS files on this machine (absolute paths), which the provider copies to the gateway's host."""
        declared = GatewaySettings.model_validate(want.attributes).tls
        return resolved_tls(declared, op.ws.config_dir) if declared else None

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        return self._start(op, want, None)

    def _start(self, op: Op, want: Desired, prior: ResourceState | None) -> dict[str, Any]:
        """(Re)start every replica in turn, each healthy before the next; then stop replicas no longer wanted."""
        replicas = self._replicas(op, want)
        self._refuse_a_stranger(op, want, replicas)
        host, rows = self._host(op, want.attributes), []
        for replica in replicas:
            found = call(host.start_gateway, replica_key(want.name, replica.index),
                         self._runtime_config(op, want, replica, replicas))
            if self._wait(op, want, replica.url) and replica.index + 1 < len(replicas):
                time.sleep(REPLICA_SETTLE)  # a load balancer's health checks take it back before the next stops
            rows.append({**replica.to_json(), **found})
        if prior is not None:
            self._stop_beyond(op, prior, len(replicas), remove_data=True)
        self._restore_ledger(op, want)
        return {**_head(rows[0]), "replica_set": rows}

    def _stop_beyond(self, op: Op, prior: ResourceState, count: int, remove_data: bool) -> None:
        """Stop the recorded replicas from index ``count`` on (all of them with 0)."""
        host = self._host(op, prior.attributes)
        for row in reversed(recorded(prior.computed, str(prior.attributes["advertise_url"]))):
            index = int(row["id"][1:])
            if index >= count:
                call(host.stop_gateway, replica_key(prior.name, index), remove_data)

    def _restore_ledger(self, op: Op, want: Desired) -> None:
        """Give the gateway the ledger its predecessors left (see :mod:`gpuform.engine.ledgers`)."""
        entries = ledgers.kept(op.ws, op.lineage, want.name)
        if entries:
            with op.admin(want.name) as admin:
                added = call(admin.restore_ledger, entries)
            if added:
                op.ws.on_event(want.address, f"took over {added} ledger row(s) of the gateway it replaces")

    def _refuse_a_stranger(self, op: Op, want: Desired, replicas: list[Replica]) -> None:
        """A gateway of another deployment (another state lineage) at this URL is never replaced silently:
        its workers would be orphaned, polling with tokens nobody knows."""
        for url in dict.fromkeys([str(want.attributes["advertise_url"]), *(r.url for r in replicas)]):
            with AdminClient(url, None, tls=op.ws.client_tls(want.attributes)) as probe:
                found = probe.healthy()
            if found is not None and found.get("deployment") not in (None, deployment_id(op.lineage)):
                raise _stranger(op, want, url)

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        """A change of reloadable fields only (keys, timings, pools, webhooks) is taken by the running replicas
        without a restart (hot reload); anything else, or a replica that cannot reload, restarts them in turn."""
        if reloadable(prior.attributes, want.attributes):
            computed = self._reload(op, want)
            if computed is not None:
                return computed
        return self._start(op, want, prior)

    def _reload(self, op: Op, want: Desired) -> dict[str, Any] | None:
        replicas, host, rows, taken = self._replicas(op, want), self._host(op, want.attributes), [], []
        for replica in replicas:
            computed = call(host.reload_gateway, replica_key(want.name, replica.index),
                            self._runtime_config(op, want, replica, replicas))
            if computed is None:
                return None
            with self._client(op, want.name, replica.url, want.attributes, want) as admin:
                fields = call(admin.reload)
            if fields is None:
                return None
            taken += fields
            rows.append({**replica.to_json(), **computed})
        op.ws.on_event(want.address, f"reloaded without a restart ({', '.join(dict.fromkeys(taken)) or 'no change'})")
        return {**_head(rows[0]), "replica_set": rows}

    def _wait(self, op: Op, want: Desired, url: str) -> bool:
        """Wait until the replica at ``url`` answers as this deployment; True when it did not at first (it
        started or restarted), False when it already did (adopted)."""
        with self._client(op, want.name, url, want.attributes, want) as admin:
            first = admin.healthy()
            call(admin.wait_healthy, GATEWAY_START_TIMEOUT, op.lineage)
        return first is None or first.get("deployment") != deployment_id(op.lineage)

    def delete(self, op: Op, prior: ResourceState) -> None:
        self._keep_ledger(op, prior)
        self._stop_beyond(op, prior, 0, remove_data=True)

    def _keep_ledger(self, op: Op, prior: ResourceState) -> None:
        """The ledger belongs to the deployment: keep its rows before the gateway and its database go."""
        try:
            with op.admin(prior.name) as admin:
                entries = admin.ledger()
        except GatewayError as exc:
            op.ws.on_event(prior.address, f"the gateway's ledger could not be read, so it is not kept ({exc.message})")
            return
        ledgers.keep(op.ws, op.lineage, prior.name, entries)


def _head(row: dict[str, Any]) -> dict[str, Any]:
    """Replica 0's provider attributes, recorded at the top as before replicas (pid, container, unit…)."""
    return {k: v for k, v in row.items() if k not in ("id", "url", "listen", "up")}


def _stranger(op: Op, want: Desired, url: str) -> GatewayError:
    where = f"{want.source}: " if want.source else ""
    return GatewayError(
        f"{where}a gateway of another gpuform deployment (another state lineage: another workspace, or "
        f"another clone's state) answers at {url}; this gateway would listen on {want.attributes['listen']}",
        "Give each workspace its own port (e.g. listen: \"0.0.0.0:${var.port}\" with a --var-file per "
        "workspace), run this from the configuration and state that created that gateway (or `gpuform "
        f"import gateway.{want.name} {want.name}` there), or destroy that deployment first.")


class EndpointHandler:
    """Endpoints are registered with their gateway; the provider prepares the hosts (images, venvs)."""

    def read(self, op: Op, prior: ResourceState) -> Observed:
        gateway = prior.attributes["gateway"]
        if f"gateway.{gateway}" not in op.state.resources:
            return Observed(False, notes=[f"gateway.{gateway} is gone"])
        found = op.registered_endpoint(gateway, prior.name)
        if found is None:
            return Observed(False)
        host_side = op.provider(prior.attributes["pool"]).read_endpoint(prior.name, _spec(prior.attributes))
        spec = dict(found.get("spec") or {})
        return Observed(True, {k: v for k, v in spec.items() if k in prior.attributes}, host_side.attributes,
                        host_side.notes, repair=host_side.repair)

    def _push(self, op: Op, want: Desired, environment: str | None = None) -> None:
        """Register the endpoint; ``environment`` (what the provider prepared) rolls workers when it changes."""
        secret_env = {str(p[-1]): str(v) for p, v in want.secrets.items() if p[:2] == ("worker", "env")}
        spec = _spec(want.attributes)
        if environment:
            spec = spec.model_copy(update={"environment": environment})
        failures: list[GatewayError] = []
        replicas = op.replica_admins(want.attributes["gateway"])
        for replica in replicas:
            with replica as admin:
                try:
                    call(admin.put_endpoint, want.name, spec, secret_env)
                except GatewayError as exc:
                    failures.append(exc)
                    if len(replicas) > 1:
                        op.ws.on_event(want.address, f"the replica at {admin.base_url} did not take the endpoint "
                                                     f"({exc.message}); it reads it from the store when it starts")
        if len(failures) == len(replicas):  # no replica took it
            raise failures[0]

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        assert want.pool is not None
        spec = _spec(want.attributes)
        computed = call(op.provider(want.pool).prepare_endpoint, want.name, spec)
        self._push(op, want, computed.get("environment"))
        if not op.ws.no_wait and spec.scaling.min_workers:
            self._wait_ready(op, want, spec)
        return computed

    def _wait_ready(self, op: Op, want: Desired, spec: EndpointSpec) -> None:
        """Wait until the gateway reports ``min_workers`` ready; a timeout (or a crash loop) is an error that
        names the endpoint's condition: UNHEALTHY with the worker's last log lines, or NO_CAPACITY."""
        wanted = spec.scaling.min_workers
        timeout = op.ws.wait_timeout if op.ws.wait_timeout is not None else spec.worker.ready_timeout + 30
        deadline = time.monotonic() + timeout
        op.ws.on_event(want.address, f"waiting for {wanted} ready worker(s)")
        with op.admin(spec.gateway) as admin:
            while True:
                status = admin.get(f"/admin/endpoints/{want.name}/status")
                ready, condition = int(status.get("ready_workers") or 0), dict(status.get("condition") or {})
                if ready >= wanted:
                    return
                crash_looping = condition.get("status") == "UNHEALTHY" and int(condition.get("failures", 0)) >= 2
                if crash_looping or time.monotonic() > deadline or op.ws.cancelled.is_set():
                    raise _not_ready(want, wanted, ready, condition, time.monotonic() - deadline + timeout)
                time.sleep(0.25)

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        return self.create(op, want)

    def delete(self, op: Op, prior: ResourceState) -> None:
        gateway = prior.attributes["gateway"]
        if f"gateway.{gateway}" in op.state.resources:
            for replica in op.replica_admins(gateway):
                with replica as admin:
                    try:
                        call(admin.delete_endpoint, prior.name, 30.0)
                    except GatewayError as exc:
                        op.ws.on_event(prior.address, f"gateway {admin.base_url} unreachable while draining "
                                                      f"({exc.message}); sweeping workers directly")
        call(op.provider(prior.attributes["pool"]).remove_endpoint, prior.name, _spec(prior.attributes))


def reloadable(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether the running gateway takes the change from ``before`` to ``after`` by a hot reload."""
    before = current_attributes(ResourceKind.GATEWAY, before)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    return bool(changed) and changed <= GATEWAY_RELOADABLE


def _not_ready(want: Desired, wanted: int, ready: int, condition: dict[str, Any], waited: float) -> GatewayError:
    where = f"{want.source}: " if want.source else ""
    state = condition.get("status", "OK")
    why = f"; the endpoint is {state}: {condition.get('message', '')}" if state != "OK" else ""
    tail = f"\nlast log lines:\n{condition['log_tail']}" if condition.get("log_tail") else ""
    hint = {"NO_CAPACITY": "Free GPUs of the listed types, add a type to gpu.types, or lower min_workers.",
            "UNHEALTHY": f"Fix the worker (`gpuform logs {want.name}` shows its output), then apply again."}.get(
        state, "A slow first start (a large model) may need more time: --wait-timeout SECONDS.")
    return GatewayError(f"{where}{ready} of {wanted} min_workers ready after {waited:.0f}s{why}"
                        f"{tail}", hint + " `apply --no-wait` does not wait for workers.")


def _spec(attributes: dict[str, Any]) -> EndpointSpec:
    return EndpointSpec.model_validate(attributes)


HANDLERS: dict[str, Handler] = {
    ResourceKind.POOL: PoolHandler(), ResourceKind.POLICY: PolicyHandler(), ResourceKind.VOLUME: VolumeHandler(),
    ResourceKind.GATEWAY: GatewayHandler(), ResourceKind.ENDPOINT: EndpointHandler(),
}
