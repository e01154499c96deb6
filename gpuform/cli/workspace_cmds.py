"""workspace list|new|select|show|delete, and init (set up the backend; -migrate-state moves the state)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from gpuform.cli.common import err_console, globals_of, out_console
from gpuform.config.load import load_backend
from gpuform.engine.operations import backend_options_of
from gpuform.engine.selection import Selection, fingerprint
from gpuform.errors import StateError
from gpuform.state.backends import DEFAULT_WORKSPACE, Backend, BackendRequest, check_workspace_name, open_backend
from gpuform.state.model import State
from gpuform.state.store import StateStore, audit_event, locked

workspace_app = typer.Typer(help="Workspaces: one state per environment (dev, prod) in the backend.",
                            no_args_is_help=True)


def _open(ctx: typer.Context, kind: str | None = None, options: dict[str, Any] | None = None) -> Backend:
    """The configured backend (or the one described by ``kind`` and ``options``)."""
    g = globals_of(ctx)
    config_dir = g.directory.resolve()
    if kind is None:
        config = load_backend(config_dir)
        kind, options = config.type, backend_options_of(config, g.backend_options)
    request = BackendRequest(options or {}, config_dir, g.state_dir, os.environ.get("GPUFORM_SECRETS_KEY"))
    return open_backend(kind, request)


@workspace_app.command("show")
def show(ctx: typer.Context) -> None:
    """The selected workspace."""
    out_console.print(globals_of(ctx).workspace().name)


@workspace_app.command("list")
def list_workspaces(ctx: typer.Context) -> None:
    """Every workspace of the backend; * marks the selected one."""
    current = globals_of(ctx).workspace().name
    backend = _open(ctx)
    for name in backend.workspaces():
        out_console.print(f"{'*' if name == current else ' '} {name}", markup=False)
    backend.close()


@workspace_app.command("new")
def new(ctx: typer.Context, name: str) -> None:
    """Create a workspace (an empty state with a lineage of its own) and select it."""
    check_workspace_name(name)
    backend = _open(ctx)
    if name in backend.workspaces():
        raise StateError(f'workspace "{name}" already exists', f"Select it: gpuform workspace select {name}")
    store = backend.store(name)
    with locked(store, "workspace new"):
        store.write(State())
        store.record(audit_event("workspace new", name))
    backend.close()
    Selection(globals_of(ctx).directory.resolve()).select(name)
    out_console.print(f'Created and switched to workspace "{name}".')


@workspace_app.command("select")
def select(ctx: typer.Context, name: str) -> None:
    """Switch to a workspace."""
    backend = _open(ctx)
    known = backend.workspaces()
    backend.close()
    if name not in known:
        raise StateError(f'workspace "{name}" does not exist', f"Create it: gpuform workspace new {name}")
    Selection(globals_of(ctx).directory.resolve()).select(name)
    out_console.print(f'Switched to workspace "{name}".')


@workspace_app.command("delete")
def delete(ctx: typer.Context, name: str,
           force: Annotated[bool, typer.Option("--force", help="Delete even if it still manages resources.")]
           = False) -> None:
    """Delete a workspace's state (never the default or the selected one, nor one that manages resources)."""
    if name == DEFAULT_WORKSPACE:
        raise StateError("the default workspace cannot be deleted", "Destroy what it manages instead.")
    if name == globals_of(ctx).workspace().name:
        raise StateError(f'workspace "{name}" is selected', "Select another one first.")
    backend = _open(ctx)
    store = backend.store(name)
    managed = store.read().resources
    if managed and not force:
        raise StateError(f'workspace "{name}" still manages {len(managed)} resource(s)',
                         f"Destroy them first (gpuform workspace select {name}, then gpuform destroy), or -force.")
    with locked(store, "workspace delete"):
        store.record(audit_event("workspace delete", name))
        backend.delete_workspace(name)
    backend.close()
    out_console.print(f'Deleted workspace "{name}".')


def init_cmd(ctx: typer.Context,
             migrate_state: Annotated[bool, typer.Option("--migrate-state", help="Copy every workspace's state "
                                                         "(and generated secrets) from the backend set up before "
                                                         "into the configured one.")] = False) -> None:
    """Set up the configured backend (its tables are created on first use); on request move the state into it."""
    g = globals_of(ctx)
    config_dir = g.directory.resolve()
    selection = Selection(config_dir)
    config = load_backend(config_dir)
    options = backend_options_of(config, g.backend_options)
    target = _open(ctx, config.type, options)
    target.workspaces()  # connects, and creates the schema
    previous = selection.backend() or {"type": "local"}
    if previous != fingerprint(config.type, options):
        source = _open(ctx, str(previous.get("type", "local")), {k: v for k, v in previous.items()
                                                                 if k not in ("type", "url_sha")})
        if migrate_state:
            _migrate(source, target, str(previous.get("type")))
        elif any(source.store(w).read().exists for w in source.workspaces()):
            raise StateError(f"the backend changed (from {previous.get('type')} to {config.type}) and the previous "
                             "one holds state", "Run `gpuform init -migrate-state` to move it into the new backend.")
        source.close()
    selection.record_backend(config.type, options)
    out_console.print(f"[green]gpuform has been initialized[/green] with the {target.describe()} backend.")
    target.close()


def _migrate(source: Backend, target: Backend, kind: str) -> None:
    moved = 0
    for name in source.workspaces():
        old = source.store(name).read()
        if not old.exists:
            continue
        into = target.store(name)
        with locked(into, "init -migrate-state"):
            current = into.read()
            if current.exists and current.lineage != old.lineage:
                raise StateError(f'workspace "{name}" holds a different state in each backend (lineages '
                                 f"{old.lineage} and {current.lineage})",
                                 "Keep one: destroy or `gpuform state pull` the other first, then migrate again.")
            if current.exists and current.serial >= old.serial:
                continue
            old.serial = max(old.serial, current.serial)
            into.write(old)
            _copy_secrets(source.store(name), into)
            into.record(audit_event("init -migrate-state", f"from the {kind} backend"))
            moved += 1
    err_console.print(f"Copied {moved} workspace state(s) into the new backend.")


def _copy_secrets(source: StateStore, target: StateStore) -> None:
    for name in source.secret_names():
        value = source.secret(name)
        if value is not None:
            target.put_secret(name, value)
