"""state list|show|rm|mv|pull|push, import, output, force-unlock, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuform.cli.common import JsonFlag, LockTimeout, globals_of, locked_if, out_console
from gpuform.engine.context import Workspace
from gpuform.engine.handlers import Op
from gpuform.engine.operations import adopt, desired_state, load_config, outputs_of
from gpuform.errors import GpuformError, StateError
from gpuform.plan.render import _value
from gpuform.state.store import audit_event, parse_state

state_app = typer.Typer(help="Inspect and edit the state (advanced).", no_args_is_help=True)


def _ws(ctx: typer.Context) -> Workspace:
    return globals_of(ctx).workspace()


@state_app.command("list")
def state_list(ctx: typer.Context,
               history: Annotated[bool, typer.Option("--history", help="The serials kept, newest first.")] = False
               ) -> None:
    """List the addresses in the state (or, with -history, the serials the backend keeps)."""
    store = _ws(ctx).store
    if history:
        for rev in store.history():
            out_console.print(f"{rev.serial:>6}  {rev.written_at}  {rev.written_by}", markup=False)
        return
    for address in sorted(store.read().resources):
        out_console.print(address)


@state_app.command("audit")
def state_audit(ctx: typer.Context, json_out: JsonFlag = False,
                limit: Annotated[int, typer.Option("--limit", min=1, help="Events to show.")] = 50) -> None:
    """Who applied, destroyed or edited the state, and when (newest first)."""
    events = _ws(ctx).store.audit(limit)
    if json_out:
        sys.stdout.write(json.dumps([e.to_json() for e in events], indent=2) + "\n")
        return
    for e in events:
        out_console.print(f"{e.at}  {e.who:30s}  {e.operation:12s}  {e.detail}", markup=False)


@state_app.command("show")
def state_show(ctx: typer.Context, address: str) -> None:
    """Show one resource's attributes (sensitive values masked) and computed values."""
    state = _ws(ctx).store.read()
    res = state.resources.get(address)
    if res is None:
        hint = ("See `gpuform state list`." if state.resources else
                "The state is empty: nothing has been applied with this directory yet (see `gpuform plan`).")
        raise GpuformError(f"no resource {address} in the state", hint)
    out_console.print(f"# {address}{' (tainted)' if res.status == 'tainted' else ''}")
    _print_attrs(res.attributes, 0)
    if res.computed:
        out_console.print("\n# computed")
        _print_attrs(res.computed, 0)


def _print_attrs(attrs: dict[str, Any], indent: int) -> None:
    pad = " " * indent
    for key in sorted(attrs):
        value = attrs[key]
        if isinstance(value, dict) and value:
            out_console.print(f"{pad}{key} {{", markup=False)
            _print_attrs(value, indent + 4)
            out_console.print(f"{pad}}}", markup=False)
        else:
            out_console.print(f"{pad}{key} = {_value(value)}", markup=False)


@state_app.command("rm")
def state_rm(ctx: typer.Context, addresses: list[str],
             lock_timeout: LockTimeout = "0s") -> None:
    """Forget resources without destroying them (they keep running, unmanaged)."""
    ws = _ws(ctx)
    with locked_if(ws.store, True, "state rm", lock_timeout):
        state = ws.store.read()
        missing = [a for a in addresses if a not in state.resources]
        if missing:
            raise GpuformError(f"no resource {missing[0]} in the state", "See `gpuform state list`.")
        for address in addresses:
            del state.resources[address]
        ws.store.write(state)
        ws.store.record(audit_event("state rm", " ".join(addresses)))
    out_console.print(f"Removed {len(addresses)} resource(s) from the state.")


@state_app.command("mv")
def state_mv(ctx: typer.Context, source: str, destination: str,
             lock_timeout: LockTimeout = "0s") -> None:
    """Rename a resource in the state (after renaming it in the configuration)."""
    ws = _ws(ctx)
    with locked_if(ws.store, True, "state mv", lock_timeout):
        state = ws.store.read()
        res = state.resources.get(source)
        if res is None:
            raise GpuformError(f"no resource {source} in the state", "See `gpuform state list`.")
        kind, _, name = destination.partition(".")
        if kind != res.kind or not name:
            raise GpuformError(f"cannot move {source} to {destination}", f"The destination must be {res.kind}.NAME.")
        if destination in state.resources:
            raise GpuformError(f"{destination} already exists in the state", "Remove it first or pick another name.")
        del state.resources[source]
        res.address, res.name = destination, name
        state.resources[destination] = res
        ws.store.write(state)
        ws.store.record(audit_event("state mv", f"{source} -> {destination}"))
    out_console.print(f"Moved {source} to {destination}.")


@state_app.command("pull")
def state_pull(ctx: typer.Context,
               serial: Annotated[int | None, typer.Option("--serial", help="A kept serial instead of the latest.")]
               = None) -> None:
    """Print the state as JSON."""
    store = _ws(ctx).store
    state = store.read() if serial is None else store.read_serial(serial)
    sys.stdout.write(json.dumps(state.to_json(), indent=2) + "\n")


@state_app.command("push")
def state_push(ctx: typer.Context, file: Path,
               force: Annotated[bool, typer.Option("--force", help="Skip the lineage and serial checks.")] = False,
               lock_timeout: LockTimeout = "0s") -> None:
    """Replace the state with FILE (refused for another lineage or an older serial unless --force)."""
    ws = _ws(ctx)
    try:
        raw = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise StateError(f"cannot read {file}: {exc.strerror}", "Check the path.") from exc
    new = parse_state(raw, str(file))
    with locked_if(ws.store, True, "state push", lock_timeout):
        current = ws.store.read()
        if current.exists and not force:
            if new.lineage != current.lineage:
                raise StateError(f"{file} has lineage {new.lineage}, the state has {current.lineage}",
                                 "These are different states; pass --force only if you are sure.")
            if new.serial < current.serial:
                raise StateError(f"{file} has serial {new.serial}, older than the state's {current.serial}",
                                 "Pull the state, edit that, and push it; or pass --force.")
        new.serial = max(new.serial, current.serial)
        ws.store.write(new)
        ws.store.record(audit_event("state push", f"{file} as serial {new.serial}"))
    out_console.print(f"Pushed {file} (serial {new.serial}).")


def import_cmd(ctx: typer.Context, address: str, identifier: Annotated[str, typer.Argument(metavar="ID")],
               lock_timeout: LockTimeout = "0s") -> None:
    """Bring an existing object under management: ADDR must be in the configuration; ID names the object."""
    g = globals_of(ctx)
    ws = g.workspace()
    config = load_config(ws, g.variables)
    with locked_if(ws.store, True, "import", lock_timeout):
        state = ws.store.read()
        if address in state.resources:
            raise GpuformError(f"{address} is already managed", "Use `gpuform state rm` first to re-import it.")
        desired = desired_state(ws, config, state)
        want = desired.get(address)
        if want is None:
            raise GpuformError(f"{address} is not in the configuration", "Declare it first, then import it.")
        if identifier != want.name:
            raise GpuformError(f"ID {identifier!r} does not match {address}",
                               f"gpuform objects are identified by their name; use ID {want.name!r}.")
        missing = adopt(Op(ws, state, desired), want)
        if missing is not None:
            raise GpuformError(f"cannot import {address}: {missing or 'no such object was found'}",
                               "Check that it exists, or let apply create it.")
        ws.store.write(state)
        ws.store.record(audit_event("import", f"{address} {identifier}"))
    ws.close()
    out_console.print(f"Imported {address}. Run `gpuform plan` to see any difference from the configuration.")


def output_cmd(ctx: typer.Context, name: Annotated[str | None, typer.Argument(help="One output.")] = None,
               json_out: JsonFlag = False,
               raw: Annotated[bool, typer.Option("--raw", "-raw", help="NAME's value alone, unquoted.")] = False
               ) -> None:
    """Show the outputs: the gateway URL and each endpoint's URLs (``output NAME`` for one)."""
    state = _ws(ctx).store.read()
    outputs = state.outputs or outputs_of(state)
    if name is None:
        if raw:
            raise GpuformError("-raw needs an output NAME", "Run `gpuform output -raw gateway_url`.")
        if json_out:
            sys.stdout.write(json.dumps(outputs, indent=2) + "\n")
            return
        for key in sorted(outputs):
            _print_output(key, outputs[key]["value"])
        return
    if name not in outputs:
        known = ", ".join(sorted(outputs)) or "none (apply first)"
        raise GpuformError(f'no output named "{name}"', f"Outputs: {known}.")
    value = outputs[name]["value"]
    if raw:
        if isinstance(value, dict | list):
            raise GpuformError(f"output {name} is not a string, number or bool", "Use -json for structured values.")
        sys.stdout.write(f"{value}".lower() if isinstance(value, bool) else f"{value}")
    elif json_out:
        sys.stdout.write(json.dumps(value, indent=2) + "\n")
    else:
        _print_output(name, value)


def _print_output(prefix: str, value: Any) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _print_output(f"{prefix}.{key}", value[key])
    else:
        out_console.print(f"{prefix} = {json.dumps(value)}", markup=False)


def force_unlock_cmd(ctx: typer.Context, lock_id: str) -> None:
    """Clear a lock record left by a process that no longer runs."""
    store = _ws(ctx).store
    store.force_unlock(lock_id)
    store.record(audit_event("force-unlock", lock_id))
    out_console.print("The state has been unlocked.")


def schema_cmd() -> None:
    """Print the JSON Schema of gpuform.yaml (for editors)."""
    from gpuform.config.jsonschema import config_schema

    sys.stdout.write(json.dumps(config_schema(), indent=2) + "\n")
