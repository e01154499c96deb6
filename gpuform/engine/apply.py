"""Apply a plan: walk the dependency graph with bounded parallelism, persisting state after every resource.

Rules (see docs/architecture.md):
- creates and updates run after the changes of their dependencies; deletes run after the deletes of
  whatever depends on them; a replace is a delete then a create in one step;
- before each resource's provider calls a journal entry (``state.pending``) is saved, and after them the
  resource's new state; an apply killed anywhere leaves a state file that loads, and the next run adopts;
- each of those saves appends one change to the store (``StateStore.append``: O(one resource), not a rewrite
  of the whole state); the state is rewritten in full (compacted) once the changes outnumber twice its
  resources, so the cost stays linear in the number of resources;
- a failure skips only the dependents of the failed resource; every error is reported once, with its
  address; a Ctrl-C lets operations in flight finish and saves state before stopping.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gpuform import faults
from gpuform.engine.handlers import HANDLERS, Op
from gpuform.errors import GpuformError
from gpuform.plan.model import Action, Plan, ResourceChange
from gpuform.resources.desired import Desired
from gpuform.state.model import Change, PendingOp, ResourceState, State
from gpuform.state.store import StateStore

MIN_CHANGES_BEFORE_COMPACTION = 256


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted


class _Saver:
    """Serializes state mutations between worker threads; each is saved as one appended change."""

    def __init__(self, store: StateStore, state: State) -> None:
        self.store = store
        self.state = state
        self.lock = threading.Lock()
        self.appended = 0  # changes since the state was last written in full

    def write(self) -> None:
        with self.lock:
            self.store.write(self.state)
            self.appended = 0

    def journal(self, address: str, operation: str) -> None:
        with self.lock:
            pending = [p for p in self.state.pending if p.address != address]
            pending.append(PendingOp(address, operation, datetime.now(UTC).isoformat()))
            self._save(Change(self.state.serial + 1, self.state.lineage, address, tuple(pending)))

    def done(self, address: str, resource: ResourceState | None) -> None:
        with self.lock:
            pending = tuple(p for p in self.state.pending if p.address != address)
            self._save(Change(self.state.serial + 1, self.state.lineage, address, pending, resource,
                              removed=resource is None))

    def taint(self, address: str) -> None:
        with self.lock:
            prior = self.state.resources.get(address)
            if prior is not None:
                self._save(Change(self.state.serial + 1, self.state.lineage, address, tuple(self.state.pending),
                                  replace(prior, status="tainted")))

    def _save(self, change: Change) -> None:
        """Durably record ``change``, then make it in memory (a failed save changes nothing)."""
        self.store.append(change)
        self.state.apply_change(change)
        self.appended += 1
        if self.appended >= max(MIN_CHANGES_BEFORE_COMPACTION, 2 * len(self.state.resources)):
            self.store.write(self.state)
            self.appended = 0


def apply(op: Op, plan: Plan, store: StateStore, parallelism: int = 10) -> ApplyResult:
    """Carry out ``plan`` starting from its refreshed state; ``op.state`` is updated as it goes."""
    state = op.state
    saver = _Saver(store, state)
    saver.write()  # the refreshed state (drift, adoptions) becomes the starting point
    changes = {c.address: c for c in plan.changes if c.action != Action.NO_OP}
    graph = _graph(changes, state)
    result = ApplyResult()
    running: dict[Future[None], str] = {}
    remaining = dict(graph)
    with ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool:
        while remaining or running:
            if op.ws.cancelled.is_set():
                result.interrupted = True
                remaining.clear()
            for addr in _ready(remaining, result, running):
                del remaining[addr]
                running[pool.submit(_apply_one, op, changes[addr], saver)] = addr
            if not running:
                _skip_unreachable(remaining, result)
                break
            finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in finished:
                addr = running.pop(fut)
                _record(fut, addr, result, op)
    return result


def _graph(changes: dict[str, ResourceChange], state: State) -> dict[str, set[str]]:
    """For each change, the changes it waits for."""
    deps: dict[str, set[str]] = {a: set() for a in changes}
    for addr, c in changes.items():
        if c.action == Action.DELETE:
            # a delete waits for the deletes of everything that depends on it
            for other, oc in changes.items():
                prior_deps = state.resources[other].dependencies if other in state.resources else oc.dependencies
                if oc.action in (Action.DELETE, Action.REPLACE) and addr in prior_deps:
                    deps[addr].add(other)
        else:
            deps[addr] |= {d for d in c.dependencies if d in changes and changes[d].action != Action.DELETE}
    return deps


def _ready(remaining: dict[str, set[str]], result: ApplyResult, running: dict[Future[None], str]) -> list[str]:
    busy = set(running.values())
    done = set(result.applied)
    blocked = set(result.failed) | set(result.skipped)
    ready = []
    for addr, waits in sorted(remaining.items()):
        if waits & blocked:
            continue
        if waits <= done and addr not in busy:
            ready.append(addr)
    return ready


def _skip_unreachable(remaining: dict[str, set[str]], result: ApplyResult) -> None:
    for addr in sorted(remaining):
        result.skipped.append(addr)
    remaining.clear()


def _record(fut: Future[None], addr: str, result: ApplyResult, op: Op) -> None:
    exc = fut.exception()
    if exc is None:
        result.applied.append(addr)
        op.ws.on_event(addr, "done")
    elif isinstance(exc, GpuformError):
        result.failed[addr] = str(exc)
        op.ws.on_event(addr, "failed")
    else:
        result.failed[addr] = f"unexpected {type(exc).__name__}: {exc}"
        op.ws.on_event(addr, "failed")


def _apply_one(op: Op, change: ResourceChange, saver: _Saver) -> None:
    faults.address.set(change.address)  # fault traces name the resource (each runs in its own thread context)
    handler = HANDLERS[change.kind]
    prior = saver.state.resources.get(change.address)
    if change.action in (Action.DELETE, Action.REPLACE) and prior is not None:
        op.ws.on_event(change.address, "destroying")
        saver.journal(change.address, "delete")
        handler.delete(op, prior)
        saver.done(change.address, None)
    if change.action == Action.DELETE:
        return
    want = op.desired[change.address]
    verb = "creating" if change.action in (Action.CREATE, Action.REPLACE) else "updating"
    op.ws.on_event(change.address, verb)
    current = saver.state.resources.get(change.address)
    saver.journal(change.address, "create" if current is None else "update")
    try:
        computed = handler.create(op, want) if current is None else handler.update(op, current, want)
    except BaseException:
        if current is not None:
            saver.taint(change.address)
        raise
    saver.done(change.address, _resource(want, computed))


def _resource(want: Desired, computed: dict[str, object]) -> ResourceState:
    return ResourceState(address=want.address, kind=want.kind, name=want.name, provider=want.provider,
                         attributes=dict(want.attributes), computed=dict(computed),
                         sensitive_paths=want.sensitive_paths, dependencies=sorted(want.dependencies))
