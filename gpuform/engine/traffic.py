"""Recorded traffic: each endpoint's recent request history, read from its gateway's admin API during a
refresh, for the plan's expected monthly cost (and ``gpuform simulate --from-gateway``).

Bounded: the last :data:`WINDOW` seconds, at most :data:`MAX_ROWS` requests per endpoint and
:data:`MAX_GATEWAY_ROWS` per gateway (the newest), one paged history read per gateway (not per endpoint: a plan
of 1,000 endpoints makes a handful of calls) and one status read per gateway (for the measured cold starts). A read that
fails is a warning, never an error: the estimate is information only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gpuform.engine.handlers import Op
from gpuform.errors import GpuformError
from gpuform.gateway.client import AdminClient
from gpuform.plan.model import Observed, Traffic

WINDOW = 7 * 86400.0
MAX_ROWS = 20_000
MAX_GATEWAY_ROWS = 200_000


def traffic_of(rows: list[dict[str, Any]], endpoint: str, since: float, until: float,
               cold_start: dict[str, Any] | None = None, limit: int = MAX_ROWS) -> Traffic:
    """``rows`` (history rows, any order) as Traffic; ``cold_start``: the gateway's cold-start percentiles
    (``{"p50": …, "count": …}``) for the endpoint."""
    ordered = sorted(rows, key=lambda r: float(r["created_at"]))
    measured = cold_start or {}
    count = int(measured.get("count") or 0)
    median = measured.get("p50") if count else None
    return Traffic(endpoint, tuple(float(r["created_at"]) for r in ordered),
                   tuple(float(r.get("execution") or 0.0) for r in ordered), since, until,
                   None if median is None else float(median), count, len(rows) >= limit)


def read_traffic(admin: AdminClient, endpoint: str, window: float = WINDOW, limit: int = MAX_ROWS,
                 cold_start: dict[str, Any] | None = None) -> Traffic:
    """The last ``window`` seconds of ``endpoint``'s history (the newest ``limit`` requests); raises
    GatewayError when the gateway cannot answer."""
    until = time.time()
    rows = list(admin.request_history(endpoint, {"since": repr(until - window)}, limit))
    return traffic_of(rows, endpoint, until - window, until, cold_start, limit)


def cold_starts(admin: AdminClient) -> dict[str, dict[str, Any]]:
    """Each endpoint's measured cold-start percentiles, from one status read of the gateway."""
    endpoints: dict[str, Any] = admin.status().get("endpoints") or {}
    return {name: (body.get("metrics") or {}).get("cold_start") or {} for name, body in endpoints.items()}


def recorded_traffic(op: Op, observed: Mapping[str, Observed]) -> tuple[dict[str, Traffic], list[str]]:
    """Traffic of every endpoint in ``op.desired`` that refresh found running, by address, and a warning for
    each gateway or endpoint whose history could not be read. Endpoints with no requests are left out."""
    by_gateway: dict[str, list[str]] = {}
    for address, want in op.desired.items():
        seen = observed.get(address)
        if want.kind == "endpoint" and address in op.state.resources and seen and seen.exists and not seen.error:
            by_gateway.setdefault(str(want.attributes.get("gateway")), []).append(want.name)
    found: dict[str, Traffic] = {}
    warnings: list[str] = []
    for gateway, names in sorted(by_gateway.items()):
        try:
            found.update(_read_gateway(op, gateway, names))
        except GpuformError as exc:
            warnings.append(f"no expected cost for the endpoints of gateway.{gateway}: cannot read its request "
                            f"history ({exc.message})")
    return found, warnings


def _read_gateway(op: Op, gateway: str, names: list[str]) -> dict[str, Traffic]:
    """The traffic of ``names`` from one history read of the whole gateway (paged), newest first: at most
    :data:`MAX_ROWS` per endpoint and :data:`MAX_GATEWAY_ROWS` in all."""
    wanted = set(names)
    groups: dict[str, list[dict[str, Any]]] = {}
    with op.admin(gateway) as admin:
        measured = cold_starts(admin)
        until = time.time()
        read = 0
        for row in admin.request_history(None, {"since": repr(until - WINDOW)}, MAX_GATEWAY_ROWS):
            read += 1
            group = groups.setdefault(str(row["endpoint"]), [])
            if row["endpoint"] in wanted and len(group) < MAX_ROWS:
                group.append(row)
    out = {}
    for name in sorted(wanted & set(groups)):
        traffic = traffic_of(groups[name], name, until - WINDOW, until, measured.get(name))
        if traffic.arrivals:
            out[f"endpoint.{name}"] = replace(traffic, truncated=True) if read >= MAX_GATEWAY_ROWS else traffic
    return out
