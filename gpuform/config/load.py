"""Load a configuration directory: every ``*.yaml`` file, merged, interpolated, validated and checked.

All problems are collected in one pass and raised together as :class:`~gpuform.errors.ConfigError`,
each located at ``file:line:col``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml
from packaging.specifiers import SpecifierSet
from pydantic import BaseModel, ValidationError

from gpuform import __version__
from gpuform.config import schema
from gpuform.config.interpolate import Interpolation
from gpuform.config.plugins import pool_kinds
from gpuform.config.pyerrors import pydantic_diagnostics
from gpuform.config.references import check_references
from gpuform.config.tlscheck import check_tls
from gpuform.config.types import NAME_PATTERN
from gpuform.config.yamlsrc import Document, SourceMap, as_written, read_file
from gpuform.diagnostics import Diagnostic, Path, did_you_mean, error, has_errors, sort_key
from gpuform.errors import ConfigError


@dataclass
class Config:
    """A validated configuration. ``sensitive`` holds the paths whose values came from the environment."""

    directory: FsPath
    files: list[str]
    variables: dict[str, Any]
    pools: dict[str, schema.PoolBase] = field(default_factory=dict)
    volumes: dict[str, schema.Volume] = field(default_factory=dict)
    policies: dict[str, schema.Policy] = field(default_factory=dict)
    gateways: dict[str, schema.Gateway] = field(default_factory=dict)
    endpoints: dict[str, schema.Endpoint] = field(default_factory=dict)
    sources: SourceMap = field(default_factory=SourceMap)
    sensitive: set[Path] = field(default_factory=set)
    warnings: list[Diagnostic] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)
    backend: schema.Backend = field(default_factory=schema.Backend)
    salvaged: dict[str, dict[str, BaseModel]] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)  # address -> ID (the ``import:`` section)

    def section(self, kind: str) -> Mapping[str, BaseModel]:
        table: dict[str, Mapping[str, BaseModel]] = {
            "pool": self.pools, "volume": self.volumes, "policy": self.policies,
            "gateway": self.gateways, "endpoint": self.endpoints}
        return table[kind]

    def gateway_of(self, endpoint: schema.Endpoint) -> str:
        """The gateway serving ``endpoint`` (validated to exist)."""
        return endpoint.gateway or next(iter(self.gateways))

    def source_of(self, kind: str, name: str) -> str:
        section = next(s for s, k in schema.KIND_OF_SECTION.items() if k == kind)
        loc = self.sources.keys.get((section, name))
        return str(loc) if loc else ""

    def digest(self) -> str:
        """A hash of the evaluated configuration (sensitive values included only as hashes)."""
        blob = {kind: {n: m.model_dump(mode="json") for n, m in self.section(kind).items()}
                for kind in ("pool", "volume", "policy", "gateway", "endpoint")}
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def find_files(directory: FsPath) -> list[FsPath]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load(directory: FsPath, var_overrides: Mapping[str, str] | None = None,
         env: Mapping[str, str] | None = None, *, require_env: bool = True, workspace: str = "default",
         local_files: bool = True) -> Config:
    """Load and validate every YAML file in ``directory``; raise ConfigError listing every problem.
    ``require_env=False`` (validate) leaves unset ``${env.NAME}`` values unknown instead of failing;
    ``local_files=False`` (destroy) does not require volume sources and manifests on this machine."""
    env = os.environ if env is None else env
    diags: list[Diagnostic] = []
    if not directory.is_dir():
        raise ConfigError([error(f"configuration directory {directory} does not exist",
                                 "Run gpuform in a directory holding gpuform.yaml, or pass -C DIR.")])
    files = find_files(directory)
    if not files:
        raise ConfigError([error(f"no *.yaml file in {directory}",
                                 "Create gpuform.yaml there (see examples/quickstart), or pass -C DIR.")])
    merged, sources = _merge(files, diags)
    check_required_version(merged.get("gpuform"), sources)
    variables = _variables(merged.get("variables", {}), var_overrides or {}, env, sources, diags)
    interp = Interpolation(env, variables, sources, require_env=require_env, workspace=workspace)
    data = {k: interp.walk(v, (k,)) for k, v in merged.items() if k not in ("variables", "gpuform")}
    diags += interp.diagnostics
    config = Config(directory, [str(f) for f in files], variables, sources=sources, sensitive=interp.sensitive)
    config.backend = _backend(data.get("backend"), sources, diags) or config.backend
    _validate_sections(data, config, diags, interp.failed)
    config.imports = _imports(data.get("import") or {}, config, diags)
    diags += check_references(config, local_files)
    diags += check_tls(config)
    diags += _salvaged_references(config, diags)
    if has_errors(diags):
        raise ConfigError(sorted(diags, key=sort_key))
    config.warnings = [d for d in diags if d.severity == "warning"]
    return config


def load_backend(directory: FsPath, env: Mapping[str, str] | None = None) -> schema.Backend:
    """Only the ``backend:`` block (what a command needs to find the state before it loads the rest);
    the default when there is none. Raises ConfigError for problems in the block itself."""
    env = os.environ if env is None else env
    files = find_files(directory) if directory.is_dir() else []
    if not files:
        return schema.Backend()
    diags: list[Diagnostic] = []
    merged, sources = _merge(files, diags)
    check_required_version(merged.get("gpuform"), sources)
    block = merged.get("backend")
    if block is None:
        return schema.Backend()
    interp = Interpolation(env, {}, sources)
    backend = _backend(interp.walk(block, ("backend",)), sources, interp.diagnostics)
    found = [d for d in interp.diagnostics if d.severity == "error"]
    if found or backend is None:
        raise ConfigError(sorted(found, key=sort_key))
    return backend


def check_required_version(block: Any, sources: SourceMap, running: str = __version__) -> None:
    """Refuse, before anything else is read, a configuration whose ``gpuform.required_version`` excludes the
    running gpuform (as Terraform's ``required_version`` does): ConfigError with that one problem."""
    if block is None:
        return
    try:
        settings = schema.Settings.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(pydantic_diagnostics(exc, schema.Settings, ("gpuform",), sources, "gpuform", block)) from None
    wanted = settings.required_version
    if wanted is not None and not SpecifierSet(wanted).contains(running, prereleases=True):
        raise ConfigError([error(
            f'this configuration requires gpuform {wanted}; this is gpuform {running}',
            "Install a gpuform in that range (pip install 'gpuform" + wanted.replace(" ", "") + "'), or change "
            "gpuform.required_version if the configuration was meant for this one.",
            sources.locate(("gpuform", "required_version")))])


def _backend(block: Any, sources: SourceMap, diags: list[Diagnostic]) -> schema.Backend | None:
    if block is None:
        return None
    try:
        return schema.Backend.model_validate(block)
    except ValidationError as exc:
        diags += pydantic_diagnostics(exc, schema.Backend, ("backend",), sources, "backend", block)
        return None


def _display(path: FsPath) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(FsPath.cwd()))
    except ValueError:
        return str(path)


_PARSED: dict[tuple[tuple[str, int, int], ...], tuple[dict[str, Any], SourceMap, list[Diagnostic]]] = {}


def _merge(files: list[FsPath], diags: list[Diagnostic]) -> tuple[dict[str, Any], SourceMap]:
    """Every file parsed and merged by section (parsed once per process while the files are unchanged)."""
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    if key not in _PARSED:
        found: list[Diagnostic] = []
        _PARSED.clear()
        _PARSED[key] = (*_parse(files, found), found)
    merged, sources, found = _PARSED[key]
    diags += found
    return merged, sources  # not copied: callers build new values from it (interpolation walks it)


def _parse(files: list[FsPath], diags: list[Diagnostic]) -> tuple[dict[str, Any], SourceMap]:
    merged: dict[str, Any] = {}
    sources = SourceMap()
    for path in files:
        doc, found = read_file(path, _display(path))
        diags += found
        if doc is not None:
            _merge_document(doc, merged, sources, diags)
    return merged, sources


def _merge_document(doc: Document, merged: dict[str, Any], sources: SourceMap, diags: list[Diagnostic]) -> None:
    if not isinstance(doc.data, dict):
        diags.append(error("the top level must be a mapping of sections",
                           f"Start with one of: {', '.join(schema.SECTIONS)}.", doc.sources.locate(())))
        return
    for section, body in doc.data.items():
        key_loc = doc.sources.keys.get((section,))
        if section not in schema.SECTIONS:
            hint = did_you_mean(section, schema.SECTIONS)
            diags.append(error(f'unknown section "{section}"',
                               f"Valid sections: {', '.join(schema.SECTIONS)}.{hint}", key_loc))
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            diags.append(error(f'section "{section}" must be a mapping of NAME: {{...}}',
                               "Indent the entries under the section name.", doc.sources.locate((section,))))
            continue
        target = merged.setdefault(section, {})
        for name, value in body.items():
            if name in target:
                first = sources.keys.get((section, name))
                diags.append(error(f'{section}.{name} is defined twice',
                                   f"First definition at {first}; remove or rename one of them.",
                                   doc.sources.keys.get((section, name))))
                continue
            target[name] = value
    sources.update(doc.sources)


def _variables(declared: Any, overrides: Mapping[str, str], env: Mapping[str, str], sources: SourceMap,
               diags: list[Diagnostic]) -> dict[str, Any]:
    if not isinstance(declared, dict):
        diags.append(error("`variables` must be a mapping of NAME: default", "", sources.locate(("variables",))))
        declared = {}
    values = dict(declared)
    prefix = "GPUFORM_VAR_"
    for key, raw in env.items():
        if key.startswith(prefix):
            values[key[len(prefix):]] = _scalar(raw)
    for key, raw in overrides.items():
        if key not in declared:
            hint = did_you_mean(key, declared)
            diags.append(error(f'--var sets "{key}", which is not declared',
                               f"Declare it under `variables:` (with a default), or fix the name.{hint}"))
            continue
        values[key] = _scalar(raw)
    return values


def _scalar(text: str) -> Any:
    """A variable's value from the command line or the environment, read as written (see yamlsrc)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool | int | float) and not as_written(value, text):
        return text
    return value if isinstance(value, str | int | float | bool) else text


def _validate_sections(data: dict[str, Any], config: Config, diags: list[Diagnostic],
                       failed: set[Path]) -> None:
    """Validate each resource; record the addresses that fail in ``config.invalid``."""
    providers = pool_kinds()
    for section, kind in schema.KIND_OF_SECTION.items():
        for name, body in (data.get(section) or {}).items():
            path: Path = (section, name)
            address = f"{kind}.{name}"
            config.invalid.add(address)
            if not _valid_name(name):
                diags.append(error(f'invalid name "{name}" for {kind}',
                                   "Names use lower-case letters, digits, - and _, starting with a letter "
                                   "or digit (at most 63).", config.sources.keys.get(path), address))
                continue
            model = _model_for(kind, body, path, providers, config.sources, diags)
            if model is None:
                continue
            try:
                obj = model.model_validate(body)
            except ValidationError as exc:
                found = pydantic_diagnostics(exc, model, path, config.sources, address, body)
                diags += [d for d in found if d.path not in failed]
                salvaged = _salvage(model, body, exc, path, config.sources, address, diags)
                if salvaged is not None:
                    config.salvaged.setdefault(section, {})[name] = salvaged
                continue
            config.invalid.discard(address)
            getattr(config, "gateways" if kind == "gateway" else section)[name] = obj


def _imports(block: dict[str, Any], config: Config, diags: list[Diagnostic]) -> dict[str, str]:
    """``import: {ADDRESS: ID}``: each address a resource of this configuration, each ID its name."""
    out: dict[str, str] = {}
    for address, identifier in block.items():
        loc = config.sources.keys.get(("import", address)) or config.sources.locate(("import", address))
        kind, _, name = str(address).partition(".")
        if kind not in schema.KIND_OF_SECTION.values() or not name:
            diags.append(error(f'import: "{address}" is not a resource address', "Write KIND.NAME, such as "
                               "endpoint.chat or gateway.main.", loc, f"import.{address}"))
        elif address in config.invalid:
            continue  # its own errors are reported
        elif name not in config.section(kind):
            diags.append(error(f"import: {address} is not in the configuration",
                               "Declare the resource too: an import block brings an existing object under the "
                               "configuration that describes it.", loc, f"import.{address}"))
        elif str(identifier) != name:
            diags.append(error(f"import: ID {str(identifier)!r} does not match {address}",
                               f"gpuform objects are identified by their name: write `{address}: {name}`.", loc,
                               f"import.{address}"))
        else:
            out[str(address)] = name
    return out


def _salvage(model: type[BaseModel], body: dict[str, Any], exc: ValidationError, path: Path, sources: SourceMap,
             address: str, diags: list[Diagnostic], rounds: int = 3) -> BaseModel | None:
    """Validate ``body`` again without the values that failed, so that errors hidden behind them (a model's own
    checks such as min_workers <= max_workers) are reported in the same run; returns the object when what
    remains is valid, for the reference checks. Known problems are not repeated."""
    seen = {(d.path, d.summary) for d in diags}
    for _ in range(rounds):
        pruned = _without(body, [tuple(e["loc"]) for e in exc.errors()])
        if pruned is None:
            return None
        body = pruned
        try:
            return model.model_validate(body)
        except ValidationError as again:
            exc = again
            for d in pydantic_diagnostics(exc, model, path, sources, address, body):
                if (d.path, d.summary) not in seen and "missing required field" not in d.summary:
                    seen.add((d.path, d.summary))
                    diags.append(d)
    return None


def _without(body: dict[str, Any], locations: list[tuple[int | str, ...]]) -> dict[str, Any] | None:
    """A copy of ``body`` with the value at each location removed (the enclosing key where a location goes
    through a list); None when an error cannot be pruned (it is about the whole object, or a value missing)."""
    out = copy.deepcopy(body)
    for loc in locations:
        keys = list(itertools.takewhile(lambda k: isinstance(k, str), loc))
        parent: Any = out
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not keys or not isinstance(parent, dict) or keys[-1] not in parent:
            return None
        del parent[keys[-1]]
    return out


def _salvaged_references(config: Config, known: list[Diagnostic]) -> list[Diagnostic]:
    """Reference checks of the resources that failed validation, on what of them was valid (a misspelt field
    must not hide that the pool it names does not exist)."""
    if not config.salvaged:
        return []
    addresses = {f"{schema.KIND_OF_SECTION[s]}.{n}" for s, names in config.salvaged.items() for n in names}
    view = dataclasses.replace(config, invalid=config.invalid - addresses)
    for section, names in config.salvaged.items():
        attr = "gateways" if section == "gateway" else section
        setattr(view, attr, {**getattr(config, attr), **names})
    seen = {(str(d.source), d.summary) for d in known}
    return [d for d in check_references(view) if d.address in addresses and (str(d.source), d.summary) not in seen]


def _valid_name(name: str) -> bool:
    return isinstance(name, str) and bool(re.fullmatch(NAME_PATTERN, name))


def _model_for(kind: str, body: Any, path: Path, providers: Mapping[str, Any], sources: SourceMap,
               diags: list[Diagnostic]) -> type[BaseModel] | None:
    if not isinstance(body, dict):
        diags.append(error(f"{kind} {path[-1]} must be a mapping of fields", "Indent its fields under its name.",
                           sources.locate(path), f"{kind}.{path[-1]}"))
        return None
    if kind != "pool":
        return schema.MODEL_OF_KIND[kind]
    provider = body.get("provider")
    if isinstance(provider, str) and provider in providers:
        model: type[BaseModel] = providers[provider].pool_model
        return model
    names = ", ".join(sorted(providers))
    where = sources.locate((*path, "provider")) if "provider" in body else sources.keys.get(path)
    summary = f'unknown provider "{provider}"' if provider is not None else "pool has no `provider`"
    hint = did_you_mean(str(provider), providers) if provider is not None else ""
    diags.append(error(summary, f"Set `provider:` to one of: {names}.{hint}", where, f"pool.{path[-1]}"))
    return None
