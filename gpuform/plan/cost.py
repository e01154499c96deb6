"""Cost estimates from a pool's prices. An unknown price stays unknown; it is never shown as $0."""

from __future__ import annotations

import math
from typing import Any

from gpuform.plan.model import Cost


def endpoint_cost(endpoint: dict[str, Any], pool: dict[str, Any]) -> Cost:
    """$/h of ``endpoint`` at min and max workers, priced by its first (preferred) GPU type."""
    gpu = endpoint.get("gpu") or {}
    scaling = endpoint.get("scaling") or {}
    types = gpu.get("types") or ["cpu"]
    count = int(gpu.get("count") or 1)
    prices: dict[str, float] = pool.get("price_per_gpu_second") or {}
    primary = types[0]
    price = prices.get(primary)
    if price is None:
        return Cost(None, None, primary, f"no price for {primary} in the pool's price_per_gpu_second")
    per_worker = float(price) * count * 3600
    note = ""
    others = [t for t in types[1:] if prices.get(t) != price]
    if others:
        shown = ", ".join(f"{t} {_fmt(prices[t] * count * 3600) if t in prices else 'unknown'}/h" for t in others)
        note = f"fallback types per worker: {shown}"
    return Cost(per_worker * int(scaling.get("min_workers") or 0),
                per_worker * int(scaling.get("max_workers") or 0), primary, note)


def _fmt(value: float) -> str:
    """Cents for ordinary amounts; two significant digits for small ones ($0.000035), never a false $0.0000."""
    if value >= 0.01 or value <= 0:
        return f"${value:,.2f}"
    decimals = min(10, max(4, 1 - math.floor(math.log10(value))))
    return f"${value:.{decimals}f}"


def format_cost(value: float | None) -> str:
    return "unknown" if value is None else _fmt(value)
