"""What gateway replicas share besides jobs and workers (PostgreSQL; a SQLite gateway has no replicas).

- **Endpoints**: ``gpuform apply`` reaches whichever replica the load balancer picks; that replica stores the
  change, and every other one takes it on its next reconcile tick: one query compares the stored revisions
  with its own (:func:`endpoint_changes`), only changed endpoints are read.
- **The leader's view** of each endpoint: its condition (no capacity, unhealthy, start back-off, spending cap)
  and what the autoscaler decided. Only the leader decides, so only it knows; it publishes the view when it
  changes (one metadata row), and followers show it in ``/health``, status and the console
  (:func:`view_of`, :func:`take_view`).

Everything here is pure; the endpoint rows replicas share are :class:`gpuform.gateway.sharing.SharedEndpointRows`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from gpuform.gateway.autoscaler import Decision
from gpuform.gateway.fleet import Condition

VIEW_KEY = "leader_view"  # the metadata row the leader's view is kept in


@dataclass(frozen=True)
class EndpointChanges:
    load: tuple[str, ...]  # new, stored with another revision, or now being removed: read and take
    removed: tuple[str, ...]  # no longer stored: removed through another replica


Revision = tuple[str, bool]  # an endpoint's revision, and whether a replica is removing it


def endpoint_changes(known: Mapping[str, Revision], stored: Mapping[str, Revision],
                     removing: Set[str]) -> EndpointChanges:
    """What differs between this replica's endpoints and the store's; an endpoint this replica is removing
    itself (``removing``) is left to that removal."""
    load = tuple(sorted(n for n, rev in stored.items() if known.get(n) != rev and n not in removing))
    removed = tuple(sorted(n for n in known if n not in stored and n not in removing))
    return EndpointChanges(load, removed)


def condition_json(cond: Condition) -> dict[str, Any]:
    return {"status": cond.status, "message": cond.message, "log_tail": cond.log_tail, "since": cond.since,
            "failures": cond.failures, "backoff_until": cond.backoff_until}


def take_condition(cond: Condition, data: Mapping[str, Any]) -> None:
    """Make this replica's copy of an endpoint's condition the leader's."""
    cond.status, cond.message = str(data["status"]), str(data["message"])
    cond.log_tail, cond.since = str(data["log_tail"]), float(data["since"])
    cond.failures, cond.backoff_until = int(data["failures"]), float(data["backoff_until"])


def view_of(names: list[str], conditions: Mapping[str, Condition], decisions: Mapping[str, Decision]) -> str:
    """The leader's view of ``names`` as the text it publishes (equal views give equal texts)."""
    out: dict[str, Any] = {}
    for name in sorted(names):
        entry: dict[str, Any] = {}
        if name in conditions:
            entry["condition"] = condition_json(conditions[name])
        decision = decisions.get(name)
        if decision is not None:
            entry["decision"] = {"desired": decision.desired, "blocked": decision.blocked,
                                 "reasons": list(decision.reasons)}
        out[name] = entry
    return json.dumps(out, sort_keys=True)


def take_view(text: str, conditions: dict[str, Condition], decisions: dict[str, Decision]) -> None:
    """Take a published view into a follower's conditions and decisions (``conditions`` holds every endpoint
    this replica has shown a condition for; one the leader has none for is OK)."""
    view: dict[str, Any] = json.loads(text)
    for name, entry in view.items():
        if "condition" in entry:
            take_condition(conditions.setdefault(name, Condition()), entry["condition"])
        decision = entry.get("decision")
        if decision is not None:
            decisions[name] = Decision(int(decision["desired"]), 0, (), str(decision["blocked"]),
                                       tuple(str(r) for r in decision["reasons"]))
        else:
            decisions.pop(name, None)
    for name in [n for n in decisions if n not in view]:
        decisions.pop(name)
