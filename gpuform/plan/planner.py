"""``plan(desired, state, observed) -> Plan``: a pure function. No I/O, no clock, no randomness.

Refresh results (``observed``) are first folded into a copy of the state: what vanished or changed behind
gpuform's back becomes drift, shown apart from the changes; resources an interrupted apply created (journal
entries in ``state.pending``) are adopted. The desired attributes are then compared with that refreshed
state. Only declared attributes are compared; computed values (pids, hosts chosen, live worker counts) never
make a change or drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuform.config.schema import GATEWAY_RELOADABLE
from gpuform.errors import PlanError
from gpuform.plan.checks import capacity_warnings
from gpuform.plan.cost import endpoint_cost
from gpuform.plan.model import Action, Attrs, Drift, Observed, Plan, ResourceChange
from gpuform.resources.desired import Desired, current_attributes
from gpuform.state.model import ResourceState, State


@dataclass(frozen=True)
class PlanOptions:
    mode: str = "normal"  # normal | destroy | refresh-only
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    config_digest: str = ""
    importing: Mapping[str, str] = field(default_factory=dict)  # address -> ID (adopted into ``state`` already)


def plan(desired: Mapping[str, Desired], state: State, observed: Mapping[str, Observed] | None,
         options: PlanOptions = PlanOptions()) -> Plan:
    """Compare desired resources with the refreshed state; raise PlanError for forbidden deletions."""
    refreshed, drift, warnings = refresh_state(state, observed or {}, desired)
    result = Plan(lineage=state.lineage, serial=state.serial, config_digest=options.config_digest,
                  mode=options.mode, drift=drift, warnings=warnings, targets=list(options.targets),
                  refreshed=refreshed,
                  refresh_errors=sorted(a for a, o in (observed or {}).items() if o.error and a in state.resources))
    if options.mode == "refresh-only":
        return result
    wanted = {} if options.mode == "destroy" else desired
    changes = [_change(addr, wanted.get(addr), refreshed.resources.get(addr), options, observed or {})
               for addr in sorted(set(wanted) | set(refreshed.resources))]
    changes = _select_targets(changes, options.targets, wanted, refreshed)
    for change in changes:
        if change.address in options.importing and change.after is not None:
            change.importing = options.importing[change.address]
    _reregister_endpoints(changes)
    _check_prevent_destroy(changes, desired, refreshed)
    _add_costs(changes, desired, refreshed)
    result.changes = changes
    result.warnings += capacity_warnings(desired, observed or {})
    result.warnings += [f"{c.address}: {note}" for c in changes if not c.shown for note in c.notes]  # unlisted
    return result


def refresh_state(state: State, observed: Mapping[str, Observed],
                  desired: Mapping[str, Desired]) -> tuple[State, list[Drift], list[str]]:
    """Fold refresh results into a copy of ``state`` (its attributes in today's shape first); return it with
    the drift found and warnings."""
    refreshed = state.copy()
    for res in refreshed.resources.values():
        res.attributes = current_attributes(res.kind, res.attributes)
    drift: list[Drift] = []
    warnings: list[str] = []
    for addr, res in sorted(refreshed.resources.items()):
        obs = observed.get(addr)
        if obs is None:
            continue
        if obs.error:
            warnings.append(f"{addr}: could not refresh ({obs.error}); planning from the saved state")
            continue
        if not obs.exists:
            drift.append(Drift(addr, res.kind, res.name, res.attributes, None))
            del refreshed.resources[addr]
            continue
        merged = {**res.attributes, **{k: v for k, v in obs.attributes.items() if k in res.attributes}}
        if merged != res.attributes:
            drift.append(Drift(addr, res.kind, res.name, res.attributes, merged,
                               changed_paths(res.attributes, merged)))
        refreshed.resources[addr].attributes = merged
        refreshed.resources[addr].computed = {**res.computed, **obs.computed}
    _adopt_pending(state, observed, desired, refreshed, warnings)
    return refreshed, drift, warnings


def _adopt_pending(state: State, observed: Mapping[str, Observed], desired: Mapping[str, Desired],
                   refreshed: State, warnings: list[str]) -> None:
    """Record what an interrupted create left behind, so it is updated instead of created twice."""
    for op in state.pending:
        obs = observed.get(op.address)
        if op.address in refreshed.resources or obs is None or not obs.exists or obs.error:
            continue
        want = desired.get(op.address)
        kind, _, name = op.address.partition(".")
        base = dict(want.attributes) if want else {}
        attrs = {**base, **obs.attributes}
        refreshed.resources[op.address] = ResourceState(
            address=op.address, kind=kind, name=name, provider=want.provider if want else "unknown",
            attributes=attrs, computed=dict(obs.computed),
            dependencies=sorted(want.dependencies) if want else [])
        warnings.append(f"{op.address}: adopted what an interrupted apply created")
    refreshed.pending = []


def changed_paths(before: Attrs, after: Attrs) -> list[list[str | int]]:
    """Paths of the leaves that differ: a changed value (or type), a key only one side has, a list item only one
    side has (lists compare by position)."""
    out: list[list[str | int]] = []
    _diff(before, after, [], out)
    return sorted(out, key=lambda p: [str(x) for x in p])


def _diff(a: Any, b: Any, path: list[str | int], out: list[list[str | int]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if key in a and key in b:
                _diff(a[key], b[key], [*path, key], out)
            else:
                out.append([*path, key])
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            if i < len(a) and i < len(b):
                _diff(a[i], b[i], [*path, i], out)
            else:
                out.append([*path, i])
    elif type(a) is not type(b) or a != b:
        out.append(path)


def _change(addr: str, want: Desired | None, prior: ResourceState | None, options: PlanOptions,
            observed: Mapping[str, Observed]) -> ResourceChange:
    notes = list(observed[addr].notes) if addr in observed else []
    if want is None:
        assert prior is not None
        return _from_prior(prior, [Action.DELETE], "delete_because_no_resource_config"
                           if options.mode != "destroy" else "", notes)
    change = ResourceChange(address=addr, kind=want.kind, name=want.name, provider=want.provider,
                            actions=[Action.CREATE], before=None, after=want.attributes, pool=want.pool,
                            sensitive_paths=want.sensitive_paths, dependencies=sorted(want.dependencies),
                            notes=notes)
    if prior is None:
        return change
    change.before = prior.attributes
    if addr in options.replace:
        change.actions, change.action_reason = [Action.DELETE, Action.CREATE], "replace_by_request"
    elif prior.status == "tainted" and want.resumes:
        change.actions, change.action_reason = [Action.UPDATE], "update_because_tainted"
    elif prior.status == "tainted":
        change.actions, change.action_reason = [Action.DELETE, Action.CREATE], "replace_because_tainted"
    elif prior.attributes == want.attributes:
        repair = observed[addr].repair if addr in observed else []
        change.actions = [Action.UPDATE] if repair else [Action.NO_OP]
        change.notes += [f"repair: {r}" for r in repair]
    else:
        paths = changed_paths(prior.attributes, want.attributes)
        forced = [p for p in paths if want.forces_replace(p)]
        if forced:
            change.actions, change.replace_paths = [Action.DELETE, Action.CREATE], forced
            change.action_reason = "replace_because_cannot_update"
        else:
            change.actions = [Action.UPDATE]
            if want.kind == "gateway":
                change.notes.append(_gateway_update_note(paths, int(want.attributes.get("replicas") or 1)))
    return change


def _gateway_update_note(paths: list[list[str | int]], replicas: int = 1) -> str:
    """How a gateway takes an update: a hot reload (no restart) or a restart (a brief outage; with replicas, one
    at a time), and why."""
    fields = sorted({str(p[0]) for p in paths if p})
    restart = [f for f in fields if f not in GATEWAY_RELOADABLE]
    if not restart:
        return f"hot reload, no restart ({', '.join(fields)})"
    if replicas > 1:
        return (f"restarts the {replicas} replicas one at a time, each healthy before the next (requests in flight "
                f"on a restarting replica fail, the others serve) for: {', '.join(restart)}")
    return (f"restarts the gateway (requests in flight fail, clients retry; about 1-2 s) for: "
            f"{', '.join(restart)}")


def _from_prior(prior: ResourceState, actions: list[Action], reason: str, notes: list[str]) -> ResourceChange:
    return ResourceChange(address=prior.address, kind=prior.kind, name=prior.name, provider=prior.provider,
                          actions=actions, before=prior.attributes, after=None,
                          pool=prior.attributes.get("pool") if prior.kind != "pool" else prior.name,
                          action_reason=reason, sensitive_paths=prior.sensitive_paths,
                          dependencies=prior.dependencies, notes=notes)


def _reregister_endpoints(changes: list[ResourceChange]) -> None:
    """Endpoints of a gateway being (re)created are registered with it again."""
    fresh = {c.name for c in changes if c.kind == "gateway" and c.action in (Action.CREATE, Action.REPLACE)}
    for c in changes:
        if c.kind == "endpoint" and c.action == Action.NO_OP and (c.after or {}).get("gateway") in fresh:
            c.actions = [Action.UPDATE]
            c.notes.append(f"registered again with gateway.{(c.after or {}).get('gateway')}, which is (re)created")


def _select_targets(changes: list[ResourceChange], targets: Iterable[str], desired: Mapping[str, Desired],
                    state: State) -> list[ResourceChange]:
    targets = list(targets)
    if not targets:
        return changes
    known = set(desired) | set(state.resources)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise PlanError(f"--target {unknown[0]} matches no resource in the configuration or state",
                        "Use an address from `gpuform state list`, such as endpoint.chat.")
    keep = set(targets)
    stack = list(targets)
    while stack:
        addr = stack.pop()
        deps = desired[addr].dependencies if addr in desired else set()
        for dep in deps - keep:
            keep.add(dep)
            stack.append(dep)
    return [c for c in changes if c.address in keep]


def _check_prevent_destroy(changes: list[ResourceChange], desired: Mapping[str, Desired], state: State) -> None:
    blocked = []
    for c in changes:
        if Action.DELETE not in c.actions:
            continue
        protected = desired[c.address].prevent_destroy if c.address in desired else False
        prior = state.resources.get(c.address)
        if protected or (prior is not None and prior.attributes.get("prevent_destroy")):
            blocked.append(c.address)
    if blocked:
        raise PlanError(
            "the plan would delete resources that have prevent_destroy set: " + ", ".join(blocked),
            "Set prevent_destroy: false on them and apply that first, or change the plan (e.g. --target) "
            "so they are not deleted or replaced.")


def _add_costs(changes: list[ResourceChange], desired: Mapping[str, Desired], state: State) -> None:
    for c in changes:
        if c.kind != "endpoint":
            continue
        if c.after is not None and c.pool and f"pool.{c.pool}" in desired:
            c.cost = endpoint_cost(c.after, desired[f"pool.{c.pool}"].attributes)
        prior_pool = state.resources.get(f"pool.{(c.before or {}).get('pool')}")
        if c.before is not None and prior_pool is not None:
            c.prior_cost = endpoint_cost(c.before, prior_pool.attributes)
