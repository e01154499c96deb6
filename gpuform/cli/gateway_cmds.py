"""``gpuform gateway``: run a gateway in the foreground (``--config F``), back its database up or restore
it, and print a unit that brings a local pool's gateway back after this machine restarts."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from gpuform.cli.common import globals_of, out_console
from gpuform.engine.context import Workspace
from gpuform.errors import GatewayError, GpuformError
from gpuform.gateway.client import AdminClient
from gpuform.state.model import ResourceState, State

gateway_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                          help="Run a gateway (--config F), or back up / restore its database.")
GatewayName = Annotated[str | None, typer.Option("--gateway", "-gateway", help="Which gateway (the only one by "
                                                 "default).")]
RESTART_TIMEOUT = 60.0


@gateway_app.callback()
def gateway_main(ctx: typer.Context,
                 config: Annotated[Path | None, typer.Option("--config", help="Runtime configuration written by "
                                                             "apply.")] = None,
                 listen: Annotated[str | None, typer.Option("--listen", help="Override host:port.")] = None) -> None:
    """Run a gateway in the foreground with --config (apply runs it supervised as the gateway resource), or
    one of the commands below."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise typer.BadParameter("give --config FILE to run a gateway, or a command: backup, restore, unit",
                                 param_hint="--config")
    from gpuform.gateway.server import serve

    raise typer.Exit(serve(config, listen))


def _gateway(state: State, name: str | None) -> ResourceState:
    found = [r for r in state.resources.values() if r.kind == "gateway" and name in (None, r.name)]
    if not found:
        raise GpuformError(f"no gateway{' ' + name if name else ''} in the state",
                           "Run `gpuform apply` first, or name one with --gateway (`gpuform state list`).")
    if len(found) > 1:
        raise GpuformError("the state has several gateways", "Name one with --gateway NAME.")
    return found[0]


def _admin(ws: Workspace, res: ResourceState) -> AdminClient:
    store = dict(res.attributes.get("store") or {})
    if store.get("type") == "postgres":
        schema = store.get("schema_name") or f"gpuform_gateway_{res.name}"
        raise GpuformError(
            f"gateway.{res.name} keeps its data in PostgreSQL (schema {schema}): back it up with PostgreSQL's "
            "tools, not gpuform",
            f"pg_dump --format=custom --schema={schema} --file=gateway.dump \"$GATEWAY_DB_URL\"; restore with "
            f"pg_restore --clean --if-exists --schema={schema} --dbname=\"$GATEWAY_DB_URL\" gateway.dump "
            "(docs/ha.md).")
    return AdminClient(str(res.attributes["advertise_url"]), ws.admin_key(res.name, None, create=False),
                       timeout=60.0)


@gateway_app.command("backup")
def backup_cmd(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="Where to write the backup.")],
               gateway: GatewayName = None) -> None:
    """Write a consistent copy of the gateway's SQLite database (jobs, workers, ledger, endpoints, request
    history) to FILE, taken while it serves. It holds job inputs and outputs: keep it private (mode 0600)."""
    ws = globals_of(ctx).workspace()
    res = _gateway(ws.store.read(), gateway)
    with _admin(ws, res) as admin:
        size = admin.backup_to(file)
    out_console.print(f"gateway.{res.name}: backed up {size:,} bytes to {file}")


@gateway_app.command("restore")
def restore_cmd(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="A file `gpuform gateway backup` "
                                                                          "wrote.")],
                gateway: GatewayName = None) -> None:
    """Replace the gateway's database with FILE: the gateway checks it, restarts onto it (a brief outage) and
    keeps the database it replaced beside it as gateway.db.before-restore."""
    ws = globals_of(ctx).workspace()
    res = _gateway(ws.store.read(), gateway)
    if not file.is_file():
        raise GpuformError(f"no such file: {file}", "Give a file `gpuform gateway backup` wrote.")
    with _admin(ws, res) as admin:
        before = admin.info().get("started_at")
        answer = admin.restore_from(file)
        if not answer.get("restarting"):
            out_console.print(f"gateway.{res.name}: the backup is staged; it is taken when the gateway next starts")
            return
        _wait_restarted(admin, before, ws.store.read().lineage)
    out_console.print(f"gateway.{res.name}: restored from {file} (the database it replaced is kept as "
                      "gateway.db.before-restore in its directory)")


def _wait_restarted(admin: AdminClient, before: object, lineage: str) -> None:
    deadline = time.monotonic() + RESTART_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if admin.healthy() and admin.info().get("started_at") != before:
                return
        except GatewayError:
            pass
        time.sleep(0.25)
    raise GatewayError(f"the gateway did not come back within {RESTART_TIMEOUT:.0f}s after the restore",
                       "See `gpuform logs --gateway`; the restore is taken when it next starts.")


@gateway_app.command("unit")
def unit_cmd(ctx: typer.Context, gateway: GatewayName = None) -> None:
    """Print a systemd user unit that brings a local pool's gateway back when this machine starts (it runs
    `gpuform apply -target gateway.NAME`, which re-creates a gateway found gone; its queue and ledger are
    kept). Install: save it as ~/.config/systemd/user/gpuform-gateway-NAME.service, then `systemctl --user
    enable gpuform-gateway-NAME` and `loginctl enable-linger $USER`."""
    ws = globals_of(ctx).workspace()
    res = _gateway(ws.store.read(), gateway)
    directory = ws.config_dir.resolve()
    sys.stdout.write(
        f"[Unit]\nDescription=gpuform gateway.{res.name} ({directory})\nAfter=network-online.target\n\n"
        f"[Service]\nType=oneshot\nRemainAfterExit=yes\nWorkingDirectory={directory}\n"
        f"# values the configuration reads with ${{env.NAME}}, one NAME=value per line (mode 0600)\n"
        f"EnvironmentFile=-{directory}/.gpuform.env\n"
        f"ExecStart={sys.executable} -m gpuform -C {directory} apply -auto-approve -target gateway.{res.name}\n\n"
        f"[Install]\nWantedBy=default.target\n")
