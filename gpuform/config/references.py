"""Checks across resources: references exist, volumes sit on the endpoint's pool, no cycles; and the
gateway's store against its replicas (and the deprecated ``queue:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuform.config import adapters, schema
from gpuform.config.graph import dependencies, find_cycle
from gpuform.config.plugins import pool_kinds
from gpuform.config.volumes import check_volume
from gpuform.diagnostics import Diagnostic, Location, Path, did_you_mean, error, warning

if TYPE_CHECKING:
    from gpuform.config.load import Config


def check_references(config: Config, local_files: bool = True) -> list[Diagnostic]:
    out: list[Diagnostic] = _pool_checks(config)
    for name, vol in config.volumes.items():
        if _ref(config, out, ("volumes", name, "pool"), "pool", vol.pool, f"volume.{name}"):
            out += _capable(config, ("volumes", name, "pool"), vol.pool, "volumes", f"volume.{name}")
        out += check_volume(config, name, vol) if local_files else []
    for name, gw in config.gateways.items():
        if _ref(config, out, ("gateway", name, "pool"), "pool", gw.pool, f"gateway.{name}"):
            out += _capable(config, ("gateway", name, "pool"), gw.pool, "gateway", f"gateway.{name}")
        out += _check_store(config, name, gw)
    for name, ep in config.endpoints.items():
        _check_endpoint(config, name, ep, out)
    out += _check_depends_on(config)
    out += adapters.check_names(config)
    if not out and not config.invalid:
        out += _check_cycles(config)
    return out


def _check_store(config: Config, name: str, gw: schema.Gateway) -> list[Diagnostic]:
    """``queue:`` is deprecated (a warning, or an error when ``store:`` says otherwise); ``replicas > 1`` needs a
    postgres store and, on a pool of hosts, as many hosts as replicas."""
    out: list[Diagnostic] = []
    address, base = f"gateway.{name}", ("gateway", name)
    if gw.queue is not None:
        where = config.sources.locate((*base, "queue"), key=True)
        if "store" in gw.model_fields_set and gw.store.type != gw.queue:
            out.append(error(f"queue: {gw.queue} contradicts store: {{type: {gw.store.type}}}",
                             "Remove `queue:`; `store:` replaces it.", where, address))
        else:
            out.append(warning(f"`queue: {gw.queue}` is deprecated; write `store: {{type: {gw.queue}}}`",
                               "`store:` replaces `queue:`. The old form still works and plans no change.",
                               where, address))
    if gw.replicas > 1:
        where = config.sources.locate((*base, "replicas"))
        if gw.store.type != "postgres":
            out.append(error(f"replicas: {gw.replicas} needs a shared store, but this gateway's store is "
                             f"{gw.store.type}", "Replicas share one database: set `store: {type: postgres, url: "
                             '"${env.GATEWAY_DB_URL}"}`, or set replicas: 1.', where, address))
        out += _check_replica_hosts(config, name, gw, where)
    return out


def _check_replica_hosts(config: Config, name: str, gw: schema.Gateway, where: Location | None) -> list[Diagnostic]:
    """Replicas run on distinct hosts of a pool with ``hosts`` (one per host); a single-machine pool runs them
    on distinct ports (port, port+1, …)."""
    pool = config.pools.get(gw.pool)
    hosts = getattr(pool, "hosts", None)
    if not isinstance(hosts, list) or len(hosts) >= gw.replicas:
        return []
    return [error(f"replicas: {gw.replicas} needs {gw.replicas} hosts in pool {gw.pool}, which has {len(hosts)}",
                  f"Each replica runs on its own host (replica i on the pool's i-th host): add hosts to pool "
                  f"{gw.pool}, or lower replicas.", where, f"gateway.{name}")]


def _capable(config: Config, path: Path, pool: str, capability: str, address: str) -> list[Diagnostic]:
    """A located error when ``pool``'s provider lacks ``capability`` (it cannot run a gateway, stage volumes)."""
    provider = config.pools[pool].provider
    kind = pool_kinds().get(provider)
    if kind is None or capability in kind.capabilities:
        return []
    able = sorted(n for n, k in pool_kinds().items() if capability in k.capabilities)
    return [error(f'pool "{pool}" uses provider "{provider}", which lacks the {capability} capability',
                  f"Put {address} on a pool whose provider has it: {', '.join(able)}.",
                  config.sources.locate(path), address)]


def _ref(config: Config, out: list[Diagnostic], path: Path, kind: str, target: str, address: str) -> bool:
    names = config.section(kind)
    if target in names:
        return True
    if f"{kind}.{target}" in config.invalid:
        return False  # declared but invalid: already reported
    section = next(s for s, k in schema.KIND_OF_SECTION.items() if k == kind)
    hint = did_you_mean(target, names)
    known = f" Declared: {', '.join(sorted(names))}." if names and not hint else ""
    out.append(error(f'{path[-1]} "{target}" refers to no {kind}',
                     f"Declare it under `{section}:` or fix the name.{hint}{known}",
                     config.sources.locate(path), address))
    return False


def _check_endpoint(config: Config, name: str, ep: schema.Endpoint, out: list[Diagnostic]) -> None:
    base: Path = ("endpoints", name)
    address = f"endpoint.{name}"
    pool_ok = _ref(config, out, (*base, "pool"), "pool", ep.pool, address)
    if ep.gateway is not None:
        _ref(config, out, (*base, "gateway"), "gateway", ep.gateway, address)
    elif len(config.gateways) + sum(a.startswith("gateway.") for a in config.invalid) != 1:
        what = "no gateway is declared" if not config.gateways else "several gateways are declared"
        out.append(error(f"endpoint {name} needs a gateway, but {what}",
                         "Declare one under `gateway:`, or name it with `gateway: NAME`.",
                         config.sources.keys.get(base), address))
    if ep.policy is not None:
        _ref(config, out, (*base, "policy"), "policy", ep.policy, address)
    if ep.model and ep.model.volume is not None:
        path: Path = (*base, "model", "volume")
        if _ref(config, out, path, "volume", ep.model.volume, address):
            vol = config.volumes[ep.model.volume]
            if pool_ok and vol.pool != ep.pool:
                out.append(error(f'volume "{ep.model.volume}" is staged on pool "{vol.pool}", but the endpoint '
                                 f'runs on pool "{ep.pool}"',
                                 "Use a volume on the endpoint's pool, or move the endpoint.",
                                 config.sources.locate(path), address))
    if ep.api_keys and config.gateways:
        gw_name = ep.gateway or next(iter(config.gateways))
        keys = config.gateways[gw_name].api_keys if gw_name in config.gateways else {}
        for i, key in enumerate(ep.api_keys):
            if key not in keys:
                out.append(error(f'api key "{key}" is not declared on gateway {gw_name}',
                                 f"Add it to gateway.{gw_name}.api_keys.{did_you_mean(key, keys)}",
                                 config.sources.locate((*base, "api_keys", i)), address))
    if pool_ok:
        out += _provider_checks(config, name, ep)
    if ep.worker.template == "vllm":
        out += _vllm_checks(config, name, ep)


def _vllm_checks(config: Config, name: str, ep: schema.Endpoint) -> list[Diagnostic]:
    """Flags for vLLM are checked against the pinned vLLM's flag table (no vLLM needed here)."""
    from gpuform.workers.vllm.args import check_env

    out = []
    for problem in check_env(ep.worker.env):
        where = config.sources.locate(("endpoints", name, "worker", "env", problem.key), key=True)
        maker = error if problem.severity == "error" else warning
        hint = "See docs/workers-templates.md (LoRA adapters)." if problem.key in ("LORA_MODULES", "ENABLE_LORA") \
            else "See gpuform/workers/vllm/vllm_flags.json for the flags of the pinned vLLM."
        out.append(maker(problem.message, hint, where, f"endpoint.{name}"))
    return out


def _pool_checks(config: Config) -> list[Diagnostic]:
    """Each provider's own checks of its pools (files they name exist and parse), located in the pool."""
    out: list[Diagnostic] = []
    for name, pool in config.pools.items():
        spec = pool_kinds().get(pool.provider)
        if spec is not None and spec.check_pool is not None:
            out += [error(message, hint, config.sources.locate(("pools", name, *path)), f"pool.{name}")
                    for path, message, hint in spec.check_pool(pool, config.directory)]
    return out


def _provider_checks(config: Config, name: str, ep: schema.Endpoint) -> list[Diagnostic]:
    pool = config.pools[ep.pool]
    spec = pool_kinds().get(pool.provider)
    if spec is None or spec.check_endpoint is None:
        return []
    base: Path = ("endpoints", name)
    return [error(message, "", config.sources.locate((*base, *path)), f"endpoint.{name}")
            for path, message in spec.check_endpoint(pool, ep, config.directory)]


def _check_depends_on(config: Config) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for section in ("volumes", "gateway", "endpoints"):
        kind = schema.KIND_OF_SECTION[section]
        for name, obj in config.section(kind).items():
            for i, addr in enumerate(getattr(obj, "depends_on", [])):
                target_kind, _, target = addr.partition(".")
                if addr in config.invalid:
                    continue
                if target_kind not in schema.KIND_OF_SECTION.values() or target not in config.section(target_kind):
                    out.append(error(f'depends_on "{addr}" refers to no declared resource',
                                     "Use a KIND.NAME address such as endpoint.chat or volume.weights.",
                                     config.sources.locate((section, name, "depends_on", i)), f"{kind}.{name}"))
    return out


def _check_cycles(config: Config) -> list[Diagnostic]:
    cycle = find_cycle(dependencies(config))
    if not cycle:
        return []
    kind, _, name = cycle[0].partition(".")
    section = next(s for s, k in schema.KIND_OF_SECTION.items() if k == kind)
    loc = config.sources.locate((section, name, "depends_on")) or config.sources.keys.get((section, name))
    return [error("dependency cycle: " + " -> ".join(cycle),
                  "Remove one of the depends_on entries that close the cycle.", loc, cycle[0])]
