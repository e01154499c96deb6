"""The plan: what apply will do, what changed outside gpuform, and what it costs. Round-trips through JSON.

The JSON follows the shape of Terraform's plan JSON (``resource_changes[].change.actions/before/after``,
``resource_drift``), so tools that read one can read the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gpuform import __version__
from gpuform.state.model import State

FORMAT_VERSION = "1.0"
Attrs = dict[str, Any]


class Action(StrEnum):
    """What apply does to one resource (Terraform's actions; a replace is ``[delete, create]``)."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    NO_OP = "no-op"


@dataclass
class Observed:
    """What refresh saw of one resource: ``exists`` False means gone; ``attributes`` may omit keys."""

    exists: bool
    attributes: Attrs = field(default_factory=dict)
    computed: Attrs = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""  # refresh failed (unreachable): the prior state is kept
    repair: list[str] = field(default_factory=list)  # host-side gaps an update fixes (an image missing on a host)

    def to_json(self) -> dict[str, Any]:
        return {"exists": self.exists, "attributes": self.attributes, "computed": self.computed,
                "notes": self.notes, "error": self.error, "repair": self.repair}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observed:
        return cls(bool(data["exists"]), dict(data.get("attributes") or {}), dict(data.get("computed") or {}),
                   list(data.get("notes") or []), str(data.get("error") or ""), list(data.get("repair") or []))


@dataclass(frozen=True)
class Traffic:
    """An endpoint's recorded requests, as refresh read them from its gateway's request history: arrivals
    (epoch seconds, oldest first) with their measured execution times (0 for one that never ran), the window
    asked for (``since`` to ``until``, the time of the read), the gateway's measured cold start (median of
    ``cold_starts`` samples; None when it has none) and whether the read stopped at its row limit."""

    endpoint: str
    arrivals: tuple[float, ...]
    executions: tuple[float, ...]
    since: float
    until: float
    cold_start: float | None = None
    cold_starts: int = 0
    truncated: bool = False


@dataclass(frozen=True)
class Expected:
    """The expected cost of an endpoint for a month (30 days), from its recorded traffic replayed through the
    autoscaler with the planned policy. Information only: never a change, never part of the plan's digest.
    ``per_month`` is None when the pool has no price for the GPU type (``worker_hours_per_month`` is known)."""

    per_month: float | None
    worker_hours_per_month: float
    requests: int
    window_seconds: float  # the span of recorded traffic the month is extrapolated from
    cold_start: float
    cold_start_source: str  # "measured (median of N)" or "default"
    cold_starts_per_month: float = 0.0

    @property
    def basis(self) -> str:
        return (f"from {self.requests} request{'s' if self.requests != 1 else ''} over {_span(self.window_seconds)}"
                f", cold start {self.cold_start:.3g}s {self.cold_start_source}")

    def to_json(self) -> dict[str, Any]:
        return {"amount": self.per_month, "worker_hours": round(self.worker_hours_per_month, 3),
                "cold_starts": round(self.cold_starts_per_month, 1), "requests": self.requests,
                "window_seconds": round(self.window_seconds, 3), "cold_start_seconds": self.cold_start,
                "cold_start_source": self.cold_start_source, "basis": self.basis}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Expected:
        return cls(data.get("amount"), float(data.get("worker_hours") or 0.0), int(data.get("requests") or 0),
                   float(data.get("window_seconds") or 0.0), float(data.get("cold_start_seconds") or 0.0),
                   str(data.get("cold_start_source", "")), float(data.get("cold_starts") or 0.0))


def _span(seconds: float) -> str:
    """A window in the unit that reads best: 40 s, 12 min, 5.5 h, 6.9 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass
class Cost:
    """Estimated cost per hour at min and max workers; ``None`` means the price is unknown. ``expected``: the
    month's cost from recorded traffic, when refresh could read the endpoint's request history."""

    currency_per_hour_min: float | None
    currency_per_hour_max: float | None
    price_key: str
    note: str = ""
    expected: Expected | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per_hour_at_min_workers": self.currency_per_hour_min,
                               "per_hour_at_max_workers": self.currency_per_hour_max, "priced_as": self.price_key,
                               "note": self.note}
        if self.expected is not None:
            out["expected_per_month"] = self.expected.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cost:
        expected = data.get("expected_per_month")
        return cls(data.get("per_hour_at_min_workers"), data.get("per_hour_at_max_workers"),
                   str(data.get("priced_as", "")), str(data.get("note", "")),
                   Expected.from_json(expected) if expected else None)


@dataclass
class ResourceChange:
    address: str
    kind: str
    name: str
    provider: str
    actions: list[Action]  # [NO_OP], [CREATE], [UPDATE], [DELETE], [DELETE, CREATE]
    before: Attrs | None
    after: Attrs | None
    pool: str | None = None
    replace_paths: list[list[str | int]] = field(default_factory=list)
    action_reason: str = ""
    sensitive_paths: list[list[str | int]] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)
    cost: Cost | None = None
    prior_cost: Cost | None = None
    notes: list[str] = field(default_factory=list)
    importing: str | None = None  # the ID, when an ``import:`` block brings this object under management

    @property
    def action(self) -> Action:
        """One word: create, update, replace, delete or no-op."""
        return Action.REPLACE if len(self.actions) == 2 else self.actions[0]

    @property
    def shown(self) -> bool:
        """Whether the plan lists it: anything but a no-op, and every import."""
        return self.action != Action.NO_OP or self.importing is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.address, "mode": "managed", "type": self.kind, "name": self.name,
            "provider_name": self.provider, "pool": self.pool,
            "change": {"actions": self.actions, "before": self.before, "after": self.after,
                       "before_sensitive": _mask(self.before, self.sensitive_paths),
                       "after_sensitive": _mask(self.after, self.sensitive_paths),
                       "after_unknown": self.after_unknown(), "replace_paths": self.replace_paths},
            "dependencies": self.dependencies, "notes": self.notes,
        }
        if self.action_reason:
            out["action_reason"] = self.action_reason
        if self.importing is not None:
            out["change"]["importing"] = {"id": self.importing}
        if self.cost:
            out["cost"] = self.cost.to_json()
        if self.prior_cost:
            out["prior_cost"] = self.prior_cost.to_json()
        return out

    def after_unknown(self) -> Any:
        """Terraform's ``after_unknown``: what only apply will know. Arguments are all known at plan time; what a
        resource records once it exists (``computed``: pids, container ids, the gateway's token) is not."""
        return {"computed": True} if self.after is not None and Action.CREATE in self.actions else {}

    def planned_value(self) -> dict[str, Any]:
        """This resource in Terraform's ``planned_values.root_module.resources``."""
        return {"address": self.address, "mode": "managed", "type": self.kind, "name": self.name,
                "provider_name": self.provider, "schema_version": 0, "values": self.after,
                "sensitive_values": _mask(self.after, self.sensitive_paths)}

    def configuration(self) -> dict[str, Any]:
        """This resource in Terraform's ``configuration.root_module.resources``: each argument as a constant
        (sensitive ones only as their hashes, as everywhere in the plan), and what it depends on."""
        expressions = {key: {"constant_value": value} for key, value in (self.after or {}).items()}
        return {"address": self.address, "mode": "managed", "type": self.kind, "name": self.name,
                "provider_config_key": self.provider, "schema_version": 0, "expressions": expressions,
                "depends_on": self.dependencies}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceChange:
        change = data["change"]
        return cls(address=data["address"], kind=data["type"], name=data["name"], provider=data["provider_name"],
                   actions=[Action(a) for a in change["actions"]], before=change.get("before"),
                   after=change.get("after"),
                   pool=data.get("pool"), replace_paths=[list(p) for p in change.get("replace_paths") or []],
                   action_reason=data.get("action_reason", ""),
                   sensitive_paths=_unmask(change.get("after_sensitive") or change.get("before_sensitive")),
                   dependencies=list(data.get("dependencies") or []),
                   cost=Cost.from_json(data["cost"]) if data.get("cost") else None,
                   prior_cost=Cost.from_json(data["prior_cost"]) if data.get("prior_cost") else None,
                   notes=list(data.get("notes") or []),
                   importing=(change.get("importing") or {}).get("id"))


@dataclass
class Drift:
    """A difference refresh found between state and reality ("changed outside gpuform")."""

    address: str
    kind: str
    name: str
    before: Attrs | None
    after: Attrs | None  # None: deleted outside gpuform
    changed_paths: list[list[str | int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        actions = [Action.DELETE] if self.after is None else [Action.UPDATE]
        return {"address": self.address, "type": self.kind, "name": self.name,
                "change": {"actions": actions, "before": self.before, "after": self.after,
                           "changed_paths": self.changed_paths}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Drift:
        change = data["change"]
        return cls(data["address"], data["type"], data["name"], change.get("before"), change.get("after"),
                   [list(p) for p in change.get("changed_paths") or []])


@dataclass
class Plan:
    lineage: str
    serial: int
    config_digest: str
    mode: str = "normal"  # normal | destroy | refresh-only
    changes: list[ResourceChange] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    refreshed: State | None = None  # state after refresh, applied as-is by refresh-only plans
    gpuform_version: str = __version__
    timestamp: str = ""  # RFC 3339, when the plan was made (set by the engine: the planner reads no clock)
    variables: dict[str, Any] = field(default_factory=dict)  # the configuration's variables, as evaluated
    output_changes: dict[str, Any] = field(default_factory=dict)  # Terraform's output_changes, by output name
    refresh_errors: list[str] = field(default_factory=list)  # addresses refresh could not read: plan exits 1

    @property
    def has_changes(self) -> bool:
        if self.mode == "refresh-only":
            return bool(self.drift)
        return any(c.shown for c in self.changes)

    def counts(self) -> dict[str, int]:
        out = {"import": 0, "add": 0, "change": 0, "destroy": 0}
        for c in self.changes:
            out["import"] += c.importing is not None
            out["add"] += c.action in ("create", "replace")
            out["change"] += c.action == "update"
            out["destroy"] += c.action in ("delete", "replace")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "gpuform_version": self.gpuform_version,
            "lineage": self.lineage, "serial": self.serial, "config_digest": self.config_digest,
            "mode": self.mode, "applyable": self.has_changes and not self.refresh_errors,
            "complete": not self.refresh_errors, "errored": bool(self.refresh_errors),
            "resource_changes": [c.to_json() for c in self.changes],
            "resource_drift": [d.to_json() for d in self.drift], "warnings": self.warnings,
            "targets": self.targets,
            "prior_state": self.refreshed.to_json() if self.refreshed else None,
            "timestamp": self.timestamp, "variables": {k: {"value": v} for k, v in self.variables.items()},
            "planned_values": {"root_module": {"resources": [c.planned_value() for c in self.changes
                                                             if c.after is not None]}},
            "configuration": {"root_module": {"resources": [c.configuration() for c in self.changes
                                                            if c.after is not None]}},
            "output_changes": self.output_changes, "refresh_errors": self.refresh_errors,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(lineage=data["lineage"], serial=int(data["serial"]), config_digest=data["config_digest"],
                   mode=data.get("mode", "normal"),
                   changes=[ResourceChange.from_json(c) for c in data.get("resource_changes") or []],
                   drift=[Drift.from_json(d) for d in data.get("resource_drift") or []],
                   warnings=list(data.get("warnings") or []), targets=list(data.get("targets") or []),
                   refreshed=State.from_json(data["prior_state"]) if data.get("prior_state") else None,
                   gpuform_version=data.get("gpuform_version", ""), timestamp=data.get("timestamp", ""),
                   variables={k: v.get("value") for k, v in (data.get("variables") or {}).items()},
                   output_changes=dict(data.get("output_changes") or {}),
                   refresh_errors=list(data.get("refresh_errors") or []))


def _mask(value: Attrs | None, paths: list[list[str | int]]) -> Any:
    """Terraform's ``*_sensitive`` shape: ``true`` at each sensitive leaf."""
    if value is None:
        return False
    out: dict[str, Any] = {}
    for path in paths:
        node = out
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = True
    return out


def _unmask(mask: Any, prefix: tuple[str, ...] = ()) -> list[list[str | int]]:
    if not isinstance(mask, dict):
        return []
    out: list[list[str | int]] = []
    for key, val in mask.items():
        if val is True:
            out.append([*prefix, key])
        else:
            out += _unmask(val, (*prefix, key))
    return out
