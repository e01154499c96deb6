"""What the console's pages show, read from the runtime for one caller: only the endpoints its key may use,
and for a client key (unless shared) only its own requests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gpuform.gateway.console import series as S
from gpuform.gateway.http import Caller
from gpuform.gateway.metering import today
from gpuform.gateway.runtime import EndpointRecord, Runtime
from gpuform.gateway.states import WorkerState
from gpuform.gateway.store import HistoryEntry, HistoryQuery

CHART_ROWS = 20_000  # history rows the charts read at most (the newest)
OVERVIEW_ROWS = 5_000  # history rows of today an overview line reads at most (the newest)
SHOWN_STATES = (WorkerState.RUNNING, WorkerState.IDLE, WorkerState.INITIALIZING, WorkerState.SLEEPING,
                WorkerState.STOPPING, WorkerState.UNHEALTHY)


@dataclass(frozen=True)
class Overview:
    """One endpoint's line on the overview."""

    name: str
    status: str
    message: str
    workers: dict[str, int]
    queued: int
    running: int
    delay_p50: float | None
    delay_p95: float | None
    requests_today: int
    spent_today: float
    capped: bool = False  # more requests today than OVERVIEW_ROWS: counts and percentiles are of the newest


def visible(rt: Runtime, caller: Caller) -> list[EndpointRecord]:
    """The endpoints this caller may use, by name."""
    return [ep for _, ep in sorted(rt.endpoints.items()) if not ep.deleting and caller.may_use(ep)]


def owner_of(caller: Caller) -> str | None:
    """Whose requests the caller sees: every key's (None) for the admin and shared keys, else its own."""
    return None if caller.shared else caller.owner


def day_start(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()


def history(rt: Runtime, caller: Caller, endpoint: str, since: float, limit: int = CHART_ROWS) -> list[HistoryEntry]:
    return rt.history.query(HistoryQuery(endpoint, owner_of(caller), since=since, limit=limit))


def overview(rt: Runtime, caller: Caller, ep: EndpointRecord) -> Overview:
    now = rt.clock()
    health = rt.health(ep.name)
    rows = history(rt, caller, ep.name, day_start(now), OVERVIEW_ROWS + 1)
    capped = len(rows) > OVERVIEW_ROWS
    rows = rows[:OVERVIEW_ROWS]
    delays = [e.delay for e in rows]
    workers = {str(s): sum(1 for w in rt.fleet.of(ep.name) if w.state == s) for s in SHOWN_STATES}
    return Overview(ep.name, health["status"], health["condition"].get("message", ""),
                    {k: v for k, v in workers.items() if v}, health["jobs"]["inQueue"], health["jobs"]["inProgress"],
                    S.percentile(delays, 0.5), S.percentile(delays, 0.95), len(rows),
                    rt.ledger.spent(ep.name, today(now)), capped)


def chart_series(rt: Runtime, caller: Caller, endpoint: str, window: str) -> tuple[S.Series, bool]:
    """The charts' data, and whether the window held more requests than :data:`CHART_ROWS` (then the charts
    show the newest of them)."""
    now = rt.clock()
    span = S.WINDOWS[S.window_of(window)]
    entries = history(rt, caller, endpoint, now - span, CHART_ROWS + 1)
    workers = [w for w in rt.store.workers.recent(endpoint, limit=500)
               if w.get("stopped_at") is None or float(w["stopped_at"]) >= now - span]
    return S.series(entries[:CHART_ROWS], workers, now, window), len(entries) > CHART_ROWS


def timeline(worker: dict[str, Any]) -> list[tuple[str, float]]:
    """A worker's cold-start phases as (phase, seconds after the start was requested), in order."""
    raw = worker.get("timeline") or {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = {}
    start = float(worker.get("requested_at") or 0.0)
    phases = [(str(k), float(v) - start) for k, v in raw.items() if isinstance(v, int | float)]
    ready = worker.get("ready_at")
    if ready is not None and not any(k == "ready" for k, _ in phases):
        phases.append(("ready", float(ready) - start))
    return sorted(phases, key=lambda p: p[1])
