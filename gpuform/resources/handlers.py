"""How each resource kind is read, created, updated and deleted, through providers and the gateway.

Handlers are the only place where the control plane does I/O for a resource. Each external call is wrapped
in fault points (see :mod:`gpuform.faults`) so crash tests can interrupt apply around every one of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gpuform import faults
from gpuform.engine.context import Workspace
from gpuform.errors import GatewayError, GpuformError
from gpuform.gateway.client import AdminClient
from gpuform.plan.model import Observed
from gpuform.provider import Provider, ResourceRef
from gpuform.resources.desired import Desired, hash_secret
from gpuform.state.model import ResourceState, State

T = TypeVar("T")
GATEWAY_START_TIMEOUT = 60.0


@dataclass
class Op:
    """One operation's view: the workspace, the state as it stands, and the desired resources."""

    ws: Workspace
    state: State
    desired: dict[str, Desired]

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

    def admin(self, gateway: str) -> AdminClient:
        res = self.state.resources.get(f"gateway.{gateway}")
        want = self.desired.get(f"gateway.{gateway}")
        attrs = res.attributes if res else (want.attributes if want else None)
        if attrs is None:
            raise GatewayError(f"gateway.{gateway} is not in the state", "Run `gpuform apply` to create it.")
        configured = want.secrets.get(("admin_key",)) if want else None
        key = self.ws.admin_key(gateway, configured, create=False)
        return AdminClient(str(attrs["advertise_url"]), key)


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


def _ref(res: ResourceState | Desired) -> ResourceRef:
    return ResourceRef(res.kind, res.name)


class PoolHandler:
    def read(self, op: Op, prior: ResourceState) -> Observed:
        provider = op.provider(prior.name)
        found = provider.read(_ref(prior), prior.attributes)
        hosts = [_host_json(h) for h in provider.inventory()]
        notes = [f"host {h['name']} unreachable: {h['reason']}" for h in hosts if not h["reachable"]]
        return Observed(True, {}, {**(found or {}), "hosts": hosts}, notes)

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        provider = op.provider(want.name)
        computed = call(provider.create, _ref(want), want.attributes)
        return {**computed, "hosts": [_host_json(h) for h in provider.inventory()]}

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        provider = op.provider(want.name)
        computed = call(provider.update, _ref(want), prior.attributes, want.attributes)
        return {**computed, "hosts": [_host_json(h) for h in provider.inventory()]}

    def delete(self, op: Op, prior: ResourceState) -> None:
        call(op.provider(prior.name).delete, _ref(prior), prior.attributes)


def _host_json(h: Any) -> dict[str, Any]:
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


class ProviderHandler:
    """Kinds that live entirely on a pool's hosts (volumes)."""

    def read(self, op: Op, prior: ResourceState) -> Observed:
        found = op.provider(prior.attributes["pool"]).read(_ref(prior), prior.attributes)
        if found is None:
            return Observed(False)
        notes = [str(n) for n in found.pop("_notes", [])]
        repair = [str(r) for r in found.pop("_repair", [])]
        declared = {k: v for k, v in found.items() if k in prior.attributes}
        computed = {k: v for k, v in found.items() if k not in prior.attributes}
        return Observed(True, declared, computed, notes, repair=repair)

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        assert want.pool is not None
        return call(op.provider(want.pool).create, _ref(want), want.attributes)

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        assert want.pool is not None
        return call(op.provider(want.pool).update, _ref(want), prior.attributes, want.attributes)

    def delete(self, op: Op, prior: ResourceState) -> None:
        call(op.provider(prior.attributes["pool"]).delete, _ref(prior), prior.attributes)


class GatewayHandler:
    """The gateway process is supervised by its pool's provider; its configuration is read back over HTTP."""

    def read(self, op: Op, prior: ResourceState) -> Observed:
        found = op.provider(prior.attributes["pool"]).read(_ref(prior), prior.attributes)
        if found is None:
            return Observed(False)
        with op.admin(prior.name) as admin:
            health = admin.healthy()
            if health is None or health.get("lineage") != op.lineage:
                return Observed(False, notes=["the gateway process exists but does not answer /healthz"])
            info = admin.info()
        return Observed(True, dict(info.get("attributes") or {}), {**found, "version": info.get("version")})

    def _runtime_config(self, op: Op, want: Desired) -> dict[str, Any]:
        key = op.ws.admin_key(want.name, want.secrets.get(("admin_key",)), create=True)
        assert key is not None
        return {"name": want.name, "lineage": op.lineage, "attributes": want.attributes,
                "admin_key_hash": hash_secret(key, op.lineage), "state_dir": str(op.ws.state_dir),
                "config_dir": str(op.ws.config_dir),
                "secrets": {"webhook_secret": want.secrets.get(("webhook_secret",))}}

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        assert want.pool is not None
        attrs = {**want.attributes, "runtime_config": json.dumps(self._runtime_config(op, want))}
        computed = call(op.provider(want.pool).create, _ref(want), attrs)
        self._wait(op, want)
        return computed

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        assert want.pool is not None
        attrs = {**want.attributes, "runtime_config": json.dumps(self._runtime_config(op, want))}
        computed = call(op.provider(want.pool).update, _ref(want), prior.attributes, attrs)
        self._wait(op, want)
        return computed

    def _wait(self, op: Op, want: Desired) -> None:
        key = op.ws.admin_key(want.name, want.secrets.get(("admin_key",)), create=False)
        with AdminClient(str(want.attributes["advertise_url"]), key) as admin:
            call(admin.wait_healthy, GATEWAY_START_TIMEOUT, op.lineage)

    def delete(self, op: Op, prior: ResourceState) -> None:
        call(op.provider(prior.attributes["pool"]).delete, _ref(prior), prior.attributes)


class EndpointHandler:
    """Endpoints are registered with their gateway; the provider prepares the hosts (images, venvs)."""

    def read(self, op: Op, prior: ResourceState) -> Observed:
        gateway = prior.attributes["gateway"]
        if f"gateway.{gateway}" not in op.state.resources:
            return Observed(False, notes=[f"gateway.{gateway} is gone"])
        with op.admin(gateway) as admin:
            found = admin.get_endpoint(prior.name)
        if found is None:
            return Observed(False)
        host_side = op.provider(prior.attributes["pool"]).read(_ref(prior), prior.attributes) or {}
        repair = [str(r) for r in host_side.pop("_repair", [])]
        spec = dict(found.get("spec") or {})
        return Observed(True, {k: v for k, v in spec.items() if k in prior.attributes},
                        {**host_side, "status": found.get("status")}, repair=repair)

    def _push(self, op: Op, want: Desired) -> None:
        secret_env = {str(p[-1]): str(v) for p, v in want.secrets.items() if p[:2] == ("worker", "env")}
        with op.admin(want.attributes["gateway"]) as admin:
            call(admin.put_endpoint, want.name, want.attributes, secret_env)

    def create(self, op: Op, want: Desired) -> dict[str, Any]:
        assert want.pool is not None
        computed = call(op.provider(want.pool).create, _ref(want), want.attributes)
        self._push(op, want)
        return computed

    def update(self, op: Op, prior: ResourceState, want: Desired) -> dict[str, Any]:
        assert want.pool is not None
        computed = call(op.provider(want.pool).update, _ref(want), prior.attributes, want.attributes)
        self._push(op, want)
        return computed

    def delete(self, op: Op, prior: ResourceState) -> None:
        gateway = prior.attributes["gateway"]
        if f"gateway.{gateway}" in op.state.resources:
            with op.admin(gateway) as admin:
                try:
                    call(admin.delete_endpoint, prior.name, 30.0)
                except GatewayError as exc:
                    op.ws.on_event(prior.address, f"gateway unreachable while draining ({exc.message}); "
                                                  "sweeping workers directly")
        call(op.provider(prior.attributes["pool"]).delete, _ref(prior), prior.attributes)


HANDLERS: dict[str, Handler] = {
    "pool": PoolHandler(), "policy": PolicyHandler(), "volume": ProviderHandler(),
    "gateway": GatewayHandler(), "endpoint": EndpointHandler(),
}
