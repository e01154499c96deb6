"""The state document: what gpuform last applied, keyed by address.

Shape (JSON)::

    {"version": 2, "serial": 7, "lineage": "<uuid>", "gpuform_version": "0.1.0",
     "resources": [{"address": "endpoint.chat", "kind": "endpoint", "name": "chat", "provider": "local",
                    "attributes": {...}, "computed": {...}, "sensitive_paths": [["env", "HF_TOKEN"]],
                    "dependencies": ["gateway.main"], "status": "ok"}],
     "pending": [{"address": "gateway.main", "operation": "create", "started": "..."}],
     "outputs": {"gateway_url": {"value": "http://…", "type": "string", "sensitive": false}}}

``attributes`` are the declared values as applied (sensitive ones only as salted hashes); ``computed`` are
what providers reported (pids, hosts, digests). ``pending`` is a write-ahead journal: an operation is
recorded before its provider call and cleared after, so an apply killed in between is adopted next time.
Older formats are upgraded on read (:mod:`gpuform.state.migrations`).
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from gpuform import __version__
from gpuform.state.migrations import STATE_VERSION

Attrs = dict[str, Any]


@dataclass
class ResourceState:
    address: str
    kind: str
    name: str
    provider: str
    attributes: Attrs = field(default_factory=dict)
    computed: Attrs = field(default_factory=dict)
    sensitive_paths: list[list[str | int]] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok" or "tainted" (a create or update failed part-way)

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "kind": self.kind, "name": self.name, "provider": self.provider,
                "attributes": self.attributes, "computed": self.computed,
                "sensitive_paths": self.sensitive_paths, "dependencies": sorted(self.dependencies),
                "status": self.status}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceState:
        return cls(address=data["address"], kind=data["kind"], name=data["name"], provider=data["provider"],
                   attributes=dict(data.get("attributes") or {}), computed=dict(data.get("computed") or {}),
                   sensitive_paths=[list(p) for p in data.get("sensitive_paths") or []],
                   dependencies=list(data.get("dependencies") or []), status=data.get("status", "ok"))


@dataclass
class PendingOp:
    address: str
    operation: str  # create | update | delete
    started: str

    def to_json(self) -> dict[str, str]:
        return {"address": self.address, "operation": self.operation, "started": self.started}


@dataclass
class State:
    lineage: str = field(default_factory=lambda: str(uuid.uuid4()))
    serial: int = 0
    resources: dict[str, ResourceState] = field(default_factory=dict)
    pending: list[PendingOp] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    gpuform_version: str = __version__

    @property
    def exists(self) -> bool:
        """False for the empty state of a directory never applied."""
        return self.serial > 0

    def copy(self) -> State:
        return copy.deepcopy(self)

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "serial": self.serial, "lineage": self.lineage,
                "gpuform_version": self.gpuform_version,
                "resources": [self.resources[a].to_json() for a in sorted(self.resources)],
                "pending": [p.to_json() for p in self.pending], "outputs": self.outputs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        resources = [ResourceState.from_json(r) for r in data.get("resources") or []]
        pending = [PendingOp(p["address"], p["operation"], p.get("started", "")) for p in data.get("pending") or []]
        return cls(lineage=str(data["lineage"]), serial=int(data["serial"]),
                   resources={r.address: r for r in resources}, pending=pending,
                   outputs=dict(data.get("outputs") or {}),
                   gpuform_version=str(data.get("gpuform_version", "")))

    def apply_change(self, change: Change) -> None:
        """Replay one journal entry (it must follow this state's serial in this lineage)."""
        self.pending = list(change.pending)
        if change.resource is not None:
            self.resources[change.address] = change.resource
        elif change.removed:
            self.resources.pop(change.address, None)
        self.serial = change.serial


@dataclass(frozen=True)
class Change:
    """One journal entry: what an apply changed for one resource, recorded without rewriting the whole
    state (``StateStore.append``). ``resource`` is the resource's new state (None: unchanged, or
    ``removed``); ``pending`` is the whole (short) list of operations in flight after the change."""

    serial: int
    lineage: str
    address: str
    pending: tuple[PendingOp, ...] = ()
    resource: ResourceState | None = None
    removed: bool = False

    def follows(self, state: State) -> bool:
        return self.lineage == state.lineage and self.serial == state.serial + 1

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "lineage": self.lineage, "address": self.address,
                "pending": [p.to_json() for p in self.pending],
                "resource": self.resource.to_json() if self.resource else None, "removed": self.removed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        resource = data.get("resource")
        return cls(serial=int(data["serial"]), lineage=str(data["lineage"]), address=str(data["address"]),
                   pending=tuple(PendingOp(p["address"], p["operation"], p.get("started", ""))
                                 for p in data.get("pending") or []),
                   resource=ResourceState.from_json(resource) if resource else None,
                   removed=bool(data.get("removed")))
