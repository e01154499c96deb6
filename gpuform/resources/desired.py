"""Turn a validated configuration into the desired attributes of each resource (pure, no I/O).

Sensitive values (gateway keys, anything interpolated from ``${env.…}``) appear in attributes only as
salted hashes, so state, saved plans and rendered plans never hold them; the real values travel beside the
attributes in ``Desired.secrets`` for the apply that needs them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gpuform.config import schema
from gpuform.config.graph import dependencies
from gpuform.config.load import Config
from gpuform.config.schema import ResourceKind
from gpuform.diagnostics import Path
from gpuform.util.build import build_id
from gpuform.util.hashing import hash_secret
from gpuform.util.manifests import PRESENT, VolumeSource

GENERATED = "(generated)"

# Fields whose change cannot be applied in place: the plan replaces the resource and names the field (a nested
# field as ``field.sub``: a gateway moves to another store by replacement, but a new URL, e.g. a rotated
# password, is applied in place).
REPLACE_FIELDS: dict[str, frozenset[str]] = {
    "pool": frozenset({"provider"}),
    "volume": frozenset({"pool", "path"}),
    "policy": frozenset(),
    "gateway": frozenset({"pool", "store.type", "store.schema_name", "data_dir"}),
    "endpoint": frozenset({"pool", "gateway"}),
}
# Kinds whose update picks up where a failed create or update stopped (a volume keeps the files already
# verified on each host): a tainted one is updated, not replaced.
RESUMABLE: frozenset[str] = frozenset({"volume"})
_LIFECYCLE = {"depends_on"}
_VOLUME_DEFAULTS = {"manifest": None, "parallel_hosts": 4, "host_to_host": True}  # fields added since 0.1


@dataclass
class Desired:
    address: str
    kind: ResourceKind
    name: str
    provider: str
    pool: str | None
    attributes: dict[str, Any]
    dependencies: set[str]
    sensitive_paths: list[list[str | int]] = field(default_factory=list)
    secrets: dict[tuple[str | int, ...], Any] = field(default_factory=dict)
    prevent_destroy: bool = False
    source: str = ""

    @property
    def resumes(self) -> bool:
        return self.kind in RESUMABLE

    @property
    def replace_fields(self) -> frozenset[str]:
        return REPLACE_FIELDS[self.kind]

    def forces_replace(self, path: Sequence[str | int]) -> bool:
        """Whether a change at ``path`` cannot be applied in place (it is, or is inside, a replace field)."""
        return any(".".join(map(str, path[:n])) in self.replace_fields for n in range(1, len(path) + 1))

    def real_attributes(self) -> dict[str, Any]:
        """The attributes with sensitive values restored (for providers that must use them)."""
        attrs = copy.deepcopy(self.attributes)
        for path, value in self.secrets.items():
            _set(attrs, path, value)
        return attrs


def build(config: Config, lineage: str, volume_sources: dict[str, VolumeSource] | None = None,
          tls_digests: dict[str, str | None] | None = None) -> dict[str, Desired]:
    """Desired state of every declared resource, keyed by address. ``tls_digests``: each gateway's TLS
    certificates' digest (read by the caller), recorded as ``tls.content`` so new files plan an update."""
    deps = dependencies(config)
    volume_sources = volume_sources or {}
    tls_digests = tls_digests or {}
    out: dict[str, Desired] = {}
    for name, pool in config.pools.items():
        out[f"pool.{name}"] = _make(config, ResourceKind.POOL, name, pool.provider, name, _dump(pool), deps, lineage)
    for name, policy in config.policies.items():
        out[f"policy.{name}"] = _make(config, ResourceKind.POLICY, name, "gpuform", None, _dump(policy), deps, lineage)
    for name, vol in config.volumes.items():
        out[f"volume.{name}"] = _make(config, ResourceKind.VOLUME, name, _provider(config, vol.pool), vol.pool,
                                      _volume_attrs(vol, volume_sources.get(name)), deps, lineage)
    for name, gw in config.gateways.items():
        out[f"gateway.{name}"] = _make(config, ResourceKind.GATEWAY, name, _provider(config, gw.pool), gw.pool,
                                       _gateway_attrs(config, name, gw, deps, tls_digests.get(name)), deps, lineage)
    for name, ep in config.endpoints.items():
        out[f"endpoint.{name}"] = _make(config, ResourceKind.ENDPOINT, name, _provider(config, ep.pool), ep.pool,
                                        _endpoint_attrs(config, ep), deps, lineage)
    return out


def current_attributes(kind: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes an older gpuform recorded, in today's shape, so that upgrading gpuform alone plans no change:
    a gateway's ``queue: sqlite`` (before ``store:``) is ``store: {type: sqlite}`` with one replica, a timing
    or log setting added since (``request_history``, ``log_format``, ``logs``) has its default, one recorded
    before TLS has ``tls: null``, and a volume's newer fields have their defaults."""
    if kind == ResourceKind.VOLUME:
        return {**_VOLUME_DEFAULTS, **attrs}
    if kind != ResourceKind.GATEWAY:
        return attrs
    out = _current_timings(attrs)
    if "tls" not in out:  # before TLS: none
        out = {**out, "tls": None}
    if "timings" in out and ("log_format" not in out or "logs" not in out):
        out = {"log_format": "text", "logs": schema.LogRotation().model_dump(mode="json"), **out}
    if "store" in out:
        return out
    out = {k: v for k, v in out.items() if k != "queue"}
    out["store"] = schema.GatewayStore(type=attrs.get("queue") or "sqlite").model_dump(mode="json")
    out.setdefault("replicas", 1)
    return out


def _current_timings(attrs: dict[str, Any]) -> dict[str, Any]:
    timings = attrs.get("timings")
    if not isinstance(timings, dict):
        return attrs
    defaults = schema.GatewayTimings().model_dump(mode="json")
    missing = {k: v for k, v in defaults.items() if k not in timings}
    return {**attrs, "timings": {**timings, **missing}} if missing else attrs


def _provider(config: Config, pool: str) -> str:
    return config.pools[pool].provider


def _dump(model: BaseModel) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    return {k: v for k, v in data.items() if k not in _LIFECYCLE}


def _volume_attrs(vol: schema.Volume, source: VolumeSource | None) -> dict[str, Any]:
    """The declared fields plus what the hosts must hold: the source's digest, file count and bytes; for a
    volume already on the hosts, its manifest's digest and file count, or PRESENT without a manifest."""
    attrs = _dump(vol)
    if vol.source is None and vol.manifest is None:
        attrs["content"] = PRESENT
    elif source is not None and not source.error:
        attrs.update(content=source.digest, files=source.files)
        if vol.source is not None:
            attrs["bytes"] = source.bytes
    return attrs


def _gateway_attrs(config: Config, name: str, gw: schema.Gateway, deps: dict[str, set[str]],
                   tls_digest: str | None) -> dict[str, Any]:
    attrs = _dump(gw)
    attrs["advertise_url"] = gw.resolved_advertise_url()
    if attrs.get("tls") is not None:
        attrs["tls"]["content"] = tls_digest
    if gw.admin_key is None:
        attrs["admin_key"] = GENERATED
    driven = sorted(a.split(".", 1)[1] for a in deps[f"gateway.{name}"] if a.startswith("pool."))
    attrs["pools"] = {p: _dump(config.pools[p]) for p in driven}
    attrs["version"] = build_id()
    return attrs


def _endpoint_attrs(config: Config, ep: schema.Endpoint) -> dict[str, Any]:
    attrs = _dump(ep)
    attrs["gateway"] = config.gateway_of(ep)
    policy = config.policies.get(ep.policy) if ep.policy else None
    attrs["schedule"] = _dump(policy) if policy else None
    volume_path = None
    if ep.model and ep.model.volume:
        base = config.volumes[ep.model.volume].path
        volume_path = base + ("/" + ep.model.path.strip("/") if ep.model.path.strip("/") else "")
    attrs["volume_path"] = volume_path
    return attrs


_SECTION = {"pool": "pools", "volume": "volumes", "policy": "policies", "gateway": "gateway",
            "endpoint": "endpoints"}
_ALWAYS_SENSITIVE: dict[str, list[Path]] = {"gateway": [("admin_key",), ("webhook_secret",), ("store", "url")],
                                            "pool": [("registry", "password")]}


def _make(config: Config, kind: ResourceKind, name: str, provider: str, pool: str | None, attrs: dict[str, Any],
          deps: dict[str, set[str]], lineage: str) -> Desired:
    address = f"{kind}.{name}"
    prefix = (_SECTION[kind], name)
    paths = [p[2:] for p in config.sensitive if p[:2] == prefix]
    paths += _ALWAYS_SENSITIVE.get(kind, [])
    if kind == "gateway":
        paths += [("api_keys", k, "key") if isinstance(v, dict) else ("api_keys", k)
                  for k, v in attrs.get("api_keys", {}).items()]
        for driven in attrs.get("pools", {}):  # the gateway's copy of its pools' credentials is secret too
            paths += [("pools", *p[1:]) for p in config.sensitive if p[:2] == ("pools", driven)]
            paths += [("pools", driven, *p) for p in _ALWAYS_SENSITIVE["pool"]]
    secrets: dict[tuple[str | int, ...], Any] = {}
    for path in sorted(set(paths), key=str):
        value = _get(attrs, path)
        if value is None or value == GENERATED:
            continue
        secrets[path] = value
        _set(attrs, path, hash_secret(value, lineage))
    obj = config.section(kind)[name]
    return Desired(address=address, kind=kind, name=name, provider=provider, pool=pool, attributes=attrs,
                   dependencies=deps.get(address, set()), sensitive_paths=[list(p) for p in secrets],
                   secrets=secrets, prevent_destroy=bool(getattr(obj, "prevent_destroy", False)),
                   source=config.source_of(kind, name))


def _get(data: Any, path: Path) -> Any:
    for part in path:
        if isinstance(data, dict):
            if part not in data:
                return None
        elif not (isinstance(data, list) and isinstance(part, int) and part < len(data)):
            return None
        data = data[part]
    return data


def _set(data: Any, path: Path, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value
