"""Refresh: read reality for everything in state (and what an interrupted apply may have left), in parallel.

A resource that cannot be read (host unreachable) is reported with the reason; the rest proceed.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from gpuform.engine.handlers import HANDLERS, Op
from gpuform.errors import GpuformError
from gpuform.plan.model import Observed
from gpuform.resources.desired import Desired
from gpuform.state.model import ResourceState, State

ORDER = {"pool": 0, "policy": 0, "volume": 1, "gateway": 1, "endpoint": 2}


def refresh(op: Op, parallelism: int = 10) -> dict[str, Observed]:
    """Observed state of every resource in ``op.state`` and of every pending (journaled) address."""
    targets = list(op.state.resources.values())
    targets += _pending_stubs(op.state, op.desired)
    targets += _unmanaged_pools(op)
    out: dict[str, Observed] = {}
    for tier in sorted(set(ORDER.values())):
        batch = [r for r in targets if ORDER.get(r.kind, 3) == tier]
        if tier == ORDER["endpoint"]:
            batch = _skip_behind_missing_gateways(out, batch)
            _list_registered(op, out, batch)
        with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
            for res, observed in zip(batch, pool.map(lambda r: _read(op, r), batch), strict=True):
                out[res.address] = observed
    return out


def _skip_behind_missing_gateways(observed: dict[str, Observed], batch: list[ResourceState]) -> list[ResourceState]:
    """An endpoint whose gateway this refresh found gone cannot be read (there is no one to ask); it is kept as
    saved, not an error: recreating the gateway registers it again (the planner plans that)."""
    rest = []
    for res in batch:
        gateway = f"gateway.{res.attributes.get('gateway')}"
        seen = observed.get(gateway)
        if res.kind == "endpoint" and seen is not None and not seen.exists and not seen.error:
            observed[res.address] = Observed(True, notes=[f"{gateway} is gone; the endpoint is registered again "
                                                          "when it is recreated"])
        else:
            rest.append(res)
    return rest


def _list_registered(op: Op, observed: dict[str, Observed], endpoints: list[ResourceState]) -> None:
    """One admin call per live gateway lists its endpoints, instead of one call per endpoint. A gateway that
    cannot list them (unreachable, an older gpuform) is left to the per-endpoint reads, which report why."""
    gateways = {str(r.attributes.get("gateway")) for r in endpoints if r.kind == "endpoint"}
    for gateway in sorted(gateways):
        seen = observed.get(f"gateway.{gateway}")
        if f"gateway.{gateway}" not in op.state.resources or seen is None or not seen.exists or seen.error:
            continue
        try:
            with op.admin(gateway) as admin:
                op.registered[gateway] = admin.list_endpoints()
        except GpuformError:
            continue


def _read(op: Op, res: ResourceState) -> Observed:
    handler = HANDLERS.get(res.kind)
    if handler is None:
        return Observed(True, error=f"unknown resource kind {res.kind}")
    try:
        return handler.read(op, res)
    except GpuformError as exc:
        return Observed(True, error=exc.message)


def _pending_stubs(state: State, desired: dict[str, Desired]) -> Iterable[ResourceState]:
    """Resources an interrupted create may have made: read them as if they were in state."""
    for pending in state.pending:
        if pending.address in state.resources or pending.address not in desired:
            continue
        want = desired[pending.address]
        yield ResourceState(address=want.address, kind=want.kind, name=want.name, provider=want.provider,
                            attributes=dict(want.attributes), dependencies=sorted(want.dependencies))


def _unmanaged_pools(op: Op) -> Iterable[ResourceState]:
    """Pools in the configuration but not yet in state: inventoried so the plan can warn about capacity."""
    for addr, want in op.desired.items():
        if want.kind == "pool" and addr not in op.state.resources:
            yield ResourceState(address=addr, kind="pool", name=want.name, provider=want.provider,
                                attributes=dict(want.attributes))
