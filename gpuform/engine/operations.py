"""Operations the CLI (and tests) run: plan, apply a plan, read outputs. The CLI only parses and renders."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuform.config.load import Config, load, load_backend
from gpuform.config.schema import Backend
from gpuform.config.tls import digest as tls_digest
from gpuform.engine import adapters
from gpuform.engine.apply import ApplyResult, apply
from gpuform.engine.context import Workspace
from gpuform.engine.handlers import Op
from gpuform.engine.refresh import refresh
from gpuform.engine.selection import Selection
from gpuform.engine.traffic import recorded_traffic
from gpuform.errors import GpuformError, StalePlan
from gpuform.plan.model import Action, Expected, Observed, Plan, Traffic
from gpuform.plan.planner import PlanOptions, plan
from gpuform.resources.desired import Desired, build
from gpuform.state.backends import BackendRequest, LocalBackend, check_workspace_name, open_backend
from gpuform.state.migrations import output_value
from gpuform.state.model import ResourceState, State
from gpuform.util.manifests import VolumeSource, manifest_source, scan_source

PLANFILE_KIND = "gpuform-plan"


def workspace(config_dir: Path, state_dir: Path | None = None, backend_options: Mapping[str, str] | None = None,
              name: str | None = None) -> Workspace:
    """The configuration directory with its state: the ``backend:`` block's backend (options from
    ``-backend-config`` and ``GPUFORM_BACKEND_URL`` fill in), the selected workspace (``gpuform workspace
    select``, or ``GPUFORM_WORKSPACE``), and a local working directory for caches."""
    config_dir = config_dir.resolve()
    selection = Selection(config_dir)
    config = load_backend(config_dir)
    options = backend_options_of(config, backend_options or {})
    current = check_workspace_name(name or os.environ.get("GPUFORM_WORKSPACE") or selection.workspace())
    request = BackendRequest(options, config_dir, state_dir, os.environ.get("GPUFORM_SECRETS_KEY"))
    backend = open_backend(config.type, request)
    if isinstance(backend, LocalBackend):
        work_dir = backend.path_of(current)
    else:
        work_dir = (state_dir or config_dir / ".gpuform" / "workspaces" / current).resolve()
    return Workspace(config_dir=config_dir, state_dir=work_dir, store=backend.store(current), name=current,
                     backend=config.type)


def backend_options_of(config: Backend, overrides: Mapping[str, str]) -> dict[str, Any]:
    """The backend's options: the configuration's, then -backend-config, then GPUFORM_BACKEND_URL for a URL
    still missing."""
    options: dict[str, Any] = config.model_dump(exclude={"type"}, exclude_none=True)
    options.update(overrides)
    if config.type == "postgres" and not options.get("url") and os.environ.get("GPUFORM_BACKEND_URL"):
        options["url"] = os.environ["GPUFORM_BACKEND_URL"]
    return options


def load_config(ws: Workspace, variables: Mapping[str, str] | None = None, local_files: bool = True) -> Config:
    """The configuration; ``local_files=False`` (destroy) does not need volume sources on this machine."""
    ws.config = load(ws.config_dir, variables, workspace=ws.name, local_files=local_files)
    return ws.config


def volume_sources(ws: Workspace, config: Config) -> dict[str, VolumeSource]:
    """What each volume's source directory (or ``manifest:`` file) holds; none for a volume with neither."""
    cache = ws.state_dir / ".cache" / "volume-sources.json"
    out: dict[str, VolumeSource] = {}
    for name, vol in config.volumes.items():
        if vol.source is not None:
            out[name] = scan_source((ws.config_dir / vol.source).resolve(), cache)
        elif vol.manifest is not None:
            out[name] = manifest_source(ws.config_dir, vol.manifest)
    return out


def tls_digests(config: Config) -> dict[str, str | None]:
    """Each gateway's TLS certificates' digest (what makes a renewed certificate an update in the plan)."""
    return {name: tls_digest(gw.tls, config.directory) for name, gw in config.gateways.items() if gw.tls}


def desired_state(ws: Workspace, config: Config, state: State) -> dict[str, Desired]:
    """Desired resources; raises ConfigError when what the volumes' sources hold contradicts the configuration
    (a LoRA adapter that is not there)."""
    sources = volume_sources(ws, config)
    adapters.check(ws.config_dir, config, sources)
    return build(config, state.lineage, sources, tls_digests(config))


def config_digest(desired: Mapping[str, Desired]) -> str:
    blob = json.dumps({a: d.attributes for a, d in sorted(desired.items())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Planned:
    plan: Plan
    desired: dict[str, Desired]
    state: State


Estimator = Callable[[Mapping[str, Traffic]], tuple[dict[str, Expected], list[str]]]
"""Expected monthly costs (by address) from recorded traffic, with warnings for those it could not estimate."""


def make_plan(ws: Workspace, config: Config | None, mode: str = "normal", do_refresh: bool = True,
              targets: tuple[str, ...] = (), replace: tuple[str, ...] = (), parallelism: int = 10,
              estimate: Estimator | None = None) -> Planned:
    """Refresh (unless told not to) and plan. ``config`` may be None for destroy without a configuration.
    ``estimate``: when given and refreshing a normal plan, each endpoint's recorded traffic is read from its
    gateway and the estimates are attached to the endpoints' costs (information only)."""
    state = ws.store.read()
    desired = desired_state(ws, config, state) if config is not None else {}
    importing = adopt_imports(Op(ws, state, desired), config.imports) if config and mode == "normal" else {}
    observed = refresh(Op(ws, state, desired), parallelism) if do_refresh else None
    options = PlanOptions(mode=mode, targets=targets, replace=replace, config_digest=config_digest(desired),
                          importing=importing)
    result = plan(desired, state, observed, options)
    if estimate is not None and observed is not None and mode == "normal":
        result.warnings += expected_costs(Op(ws, state, desired), observed, result, estimate)
    result.timestamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    result.output_changes = output_changes(result, state)
    if config is not None:
        result.warnings = [d.render() for d in config.warnings] + result.warnings
        result.variables = {name: "(sensitive)" if f"GPUFORM_VAR_{name}" in os.environ else value
                            for name, value in config.variables.items()}  # the environment may hold secrets
    return Planned(result, desired, state)


def expected_costs(op: Op, observed: Mapping[str, Observed], planned: Plan, estimate: Estimator) -> list[str]:
    """Read recorded traffic, estimate, and put each estimate on its endpoint's cost; the warnings."""
    traffic, warnings = recorded_traffic(op, observed)
    if not traffic:
        return warnings
    found, more = estimate(traffic)
    for change in planned.changes:
        if change.address in found and change.cost is not None:
            change.cost.expected = found[change.address]
    return warnings + more


IMPORT_ORDER = ("pool", "volume", "policy", "gateway", "endpoint")  # an endpoint is read through its gateway


def adopt_imports(op: Op, blocks: Mapping[str, str]) -> dict[str, str]:
    """Read each object an ``import:`` block names that the state lacks, and put it into ``op.state`` (in
    memory: an apply of this plan saves it); the plan marks them ``importing``. One that does not exist is
    an error, as in Terraform. Blocks whose address is already managed are done: ignored."""
    adopted: dict[str, str] = {}
    for address in sorted(blocks, key=lambda a: (IMPORT_ORDER.index(a.split(".")[0]), a)):
        want = op.desired.get(address)
        if address in op.state.resources or want is None:
            continue
        missing = adopt(op, want)
        if missing is not None:
            where = op.ws.config.sources.keys.get(("import", address)) if op.ws.config else None
            prefix = f"{where}: " if where else ""
            raise GpuformError(f"{prefix}cannot import {address}: {missing or 'no such object exists'}",
                               "Check that it runs (`gpuform status`), or remove the import block and let apply "
                               "create it.")
        adopted[address] = blocks[address]
    return adopted


def adopt(op: Op, want: Desired) -> str | None:
    """Read the existing object ``want`` names through its handler into ``op.state`` (``gpuform import`` and
    ``import:`` blocks). None when adopted; otherwise why not (the refresh error, or "" when it does not exist),
    and ``op.state`` is left as it was."""
    from gpuform.engine.handlers import HANDLERS

    stub = ResourceState(want.address, want.kind, want.name, want.provider, dict(want.attributes),
                         dependencies=sorted(want.dependencies))
    op.state.resources[want.address] = stub
    observed = HANDLERS[want.kind].read(op, stub)
    if not observed.exists or observed.error:
        del op.state.resources[want.address]
        return observed.error or ""
    stub.attributes.update({k: v for k, v in observed.attributes.items() if k in stub.attributes})
    stub.computed = dict(observed.computed)
    return None


def output_changes(planned: Plan, state: State) -> dict[str, Any]:
    """Terraform's ``output_changes``: each output before (the refreshed state) and after the plan applies."""
    before_state = planned.refreshed or state
    after_state = State()  # outputs read only kinds, names and attributes: no deep copy of the state
    after_state.resources = dict(before_state.resources)
    for change in planned.changes:
        if change.after is None:
            after_state.resources.pop(change.address, None)
        elif change.action != Action.NO_OP:
            after_state.resources[change.address] = ResourceState(change.address, change.kind, change.name,
                                                                  change.provider, change.after)
    before, after = outputs_of(before_state), outputs_of(after_state)
    out: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, {}).get("value"), after.get(name, {}).get("value")
        actions = ([Action.CREATE] if name not in before else [Action.DELETE] if name not in after
                   else [Action.NO_OP] if old == new else [Action.UPDATE])
        out[name] = {"actions": actions, "before": old, "after": new, "after_unknown": False,
                     "before_sensitive": False, "after_sensitive": False}
    return out


def run_apply(ws: Workspace, planned: Planned, parallelism: int = 10) -> ApplyResult:
    """Apply ``planned.plan``; the caller holds the state lock."""
    start = planned.plan.refreshed or planned.state
    start.lineage = planned.plan.lineage or start.lineage
    op = Op(ws, start, planned.desired)
    if planned.plan.mode == "refresh-only":
        ws.store.write(start)
        return ApplyResult()
    result = apply(op, planned.plan, ws.store, parallelism)
    start.outputs = outputs_of(start)
    ws.store.write(start)
    return result


def check_saved_plan(saved: Plan, state: State, desired: Mapping[str, Desired]) -> None:
    """Refuse a plan made from another state or configuration (Terraform's stale-plan rule)."""
    if state.exists and saved.serial > 0 and saved.lineage != state.lineage:
        raise StalePlan(f"the saved plan was made for state lineage {saved.lineage}, but the state has "
                        f"lineage {state.lineage}", "Run `gpuform plan -out FILE` again against this state.")
    if saved.serial != state.serial:
        raise StalePlan(f"the saved plan is stale: it was made from state serial {saved.serial}, and the state "
                        f"is now at serial {state.serial} (something was applied since)",
                        "Run `gpuform plan -out FILE` again, review it, then apply the new file.")
    if saved.mode != "destroy" and saved.config_digest != config_digest(desired):
        raise StalePlan("the configuration (or a value from the environment, or a volume's source files) "
                        "changed since the plan was saved",
                        "Run `gpuform plan -out FILE` again so the plan matches what you apply.")


def save_plan(path: Path, saved: Plan) -> None:
    data = {"kind": PLANFILE_KIND, "plan": saved.to_json()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def read_plan(path: Path) -> Plan:
    from gpuform.errors import GpuformError

    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GpuformError(f"cannot read plan file {path}: {exc}",
                           "Pass a file written by `gpuform plan -out`.") from exc
    if not isinstance(data, dict) or data.get("kind") != PLANFILE_KIND:
        raise GpuformError(f"{path} is not a gpuform plan file", "Pass a file written by `gpuform plan -out`.")
    return Plan.from_json(data["plan"])


def outputs_of(state: State) -> dict[str, Any]:
    """``gateway_url`` and, per endpoint, its ``url`` and ``openai_base_url``, as Terraform records outputs
    (``{"NAME": {"value": …, "type": …, "sensitive": false}}``)."""
    gateways = {r.name: str(r.attributes.get("advertise_url", "")) for r in state.resources.values()
                if r.kind == "gateway"}
    out: dict[str, Any] = {}
    if gateways:
        out["gateway_url"] = next(iter(gateways.values())) if len(gateways) == 1 else gateways
    endpoints = {}
    for res in state.resources.values():
        if res.kind == "endpoint":
            base = gateways.get(str(res.attributes.get("gateway")), "")
            endpoints[res.name] = {"url": f"{base}/v2/{res.name}", "openai_base_url": f"{base}/v2/{res.name}/openai/v1"}
    out["endpoints"] = endpoints
    return {name: output_value(value) for name, value in out.items()}
