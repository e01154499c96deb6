"""Warnings a plan carries about capacity: GPU types no host has, and max_workers that cannot fit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuform.plan.model import Observed
from gpuform.resources.desired import Desired


def capacity_warnings(desired: Mapping[str, Desired], observed: Mapping[str, Observed]) -> list[str]:
    out: list[str] = []
    for addr, want in sorted(desired.items()):
        if want.kind != "endpoint" or want.pool is None:
            continue
        pool_obs = observed.get(f"pool.{want.pool}")
        if pool_obs is None or not pool_obs.exists or "hosts" not in pool_obs.computed:
            continue
        out += _endpoint_fit(addr, want.attributes, want.pool, pool_obs.computed["hosts"])
    return out


def _endpoint_fit(addr: str, attrs: dict[str, Any], pool: str, hosts: list[dict[str, Any]]) -> list[str]:
    gpu = attrs.get("gpu") or {}
    types = [t for t in gpu.get("types") or [] if t != "cpu"]
    if not types:
        return []
    usable = [h for h in hosts if h.get("reachable") and not h.get("cordoned")]
    free = sum(1 for h in usable for g in h.get("gpus") or [] if g.get("type") in types)
    if free == 0:
        seen = sorted({g.get("type") for h in hosts for g in h.get("gpus") or []}) or ["no GPUs"]
        return [f"{addr}: no usable host in pool.{pool} has a GPU of type {' or '.join(types)} "
                f"(the pool has: {', '.join(str(s) for s in seen)})"]
    need = int((attrs.get("scaling") or {}).get("max_workers") or 0) * int(gpu.get("count") or 1)
    if need > free:
        return [f"{addr}: max_workers × gpus needs {need} GPUs of type {'/'.join(types)}, but pool.{pool} "
                f"has {free}; at most {free // int(gpu.get('count') or 1)} workers can run"]
    return []
