"""The dependency graph between declared resources (implicit references plus ``depends_on``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuform.config.load import Config


def dependencies(config: Config) -> dict[str, set[str]]:
    """For each address, the addresses it must be applied after."""
    deps: dict[str, set[str]] = {}
    for name in config.pools:
        deps[f"pool.{name}"] = set()
    for name in config.policies:
        deps[f"policy.{name}"] = set()
    for name, vol in config.volumes.items():
        deps[f"volume.{name}"] = {f"pool.{vol.pool}", *vol.depends_on}
    for name, gw in config.gateways.items():
        deps[f"gateway.{name}"] = {f"pool.{gw.pool}", *gw.depends_on}
    for name, ep in config.endpoints.items():
        gateway = config.gateway_of(ep) if config.gateways else None
        mine = {f"pool.{ep.pool}", *ep.depends_on}
        if gateway:
            mine.add(f"gateway.{gateway}")
            deps.setdefault(f"gateway.{gateway}", set()).add(f"pool.{ep.pool}")
        if ep.model and ep.model.volume:
            mine.add(f"volume.{ep.model.volume}")
        if ep.policy:
            mine.add(f"policy.{ep.policy}")
        deps[f"endpoint.{name}"] = mine
    return deps


def find_cycle(deps: dict[str, set[str]]) -> list[str] | None:
    """One dependency cycle as a list of addresses (first repeated last), or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = 1
        stack.append(node)
        for nxt in sorted(deps.get(node, ())):
            if color.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in color and (found := visit(nxt)):
                return found
        stack.pop()
        color[node] = 2
        return None

    for node in sorted(deps):
        if node not in color and (found := visit(node)):
            return found
    return None


def topological_order(deps: dict[str, set[str]]) -> list[str]:
    """Addresses ordered so that each comes after its dependencies (ties broken by name)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> None:
        if node in seen:
            return
        seen.add(node)
        for nxt in sorted(deps.get(node, ())):
            visit(nxt)
        order.append(node)

    for node in sorted(deps):
        visit(node)
    return order
