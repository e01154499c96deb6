"""What providers contribute to the configuration: a pool schema per provider, a pool and an endpoint check.

A provider registers a :class:`gpuform.provider.ProviderSpec` in the ``gpuform.providers`` entry-point
group. ``ProviderSpec`` is a :class:`PoolKind`; the configuration reads only that part, so it depends on no
provider code (entry points are loaded by name, not imported here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from gpuform.config.schema import Endpoint, PoolBase

ENTRY_POINT_GROUP = "gpuform.providers"
# (pool, endpoint, configuration directory) -> problems, each (path under the endpoint, message saying the fix)
EndpointCheck = Callable[[PoolBase, Endpoint, Path], list[tuple[tuple[str | int, ...], str]]]
# (pool, configuration directory) -> [(location within the pool, message, how to fix it)]
PoolCheck = Callable[[PoolBase, Path], list[tuple[tuple[str | int, ...], str, str]]]


@dataclass(frozen=True, kw_only=True)
class PoolKind:
    """A provider as the configuration sees it: the schema of its pools (cheap to import)."""

    name: str
    pool_model: type[PoolBase]
    description: str = ""
    check_endpoint: EndpointCheck | None = None
    check_pool: PoolCheck | None = None  # files the pool names exist and parse (e.g. its ssh_config)
    capabilities: frozenset[str] = frozenset({"workers"})  # gpuform.provider.Capability values


@cache
def pool_kinds() -> dict[str, PoolKind]:
    """Pool kinds by provider name, from the ``gpuform.providers`` entry points."""
    found: dict[str, PoolKind] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind = ep.load()
        if isinstance(kind, PoolKind):
            found[ep.name] = kind
    return found


def pool_model(provider: str) -> type[PoolBase] | None:
    kind = pool_kinds().get(provider)
    return kind.pool_model if kind else None
