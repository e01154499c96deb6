"""``gpuform console [GATEWAY] [--open]``: the URL of a gateway's web console (never with a key in it)."""

from __future__ import annotations

import sys
import webbrowser
from typing import Annotated

import typer

from gpuform.cli.common import globals_of, no_gateway
from gpuform.engine.context import Workspace
from gpuform.errors import GpuformError
from gpuform.state.store import LocalStateStore


def console_url(advertise_url: str) -> str:
    return advertise_url.rstrip("/") + "/console"


OpenFlag = Annotated[bool, typer.Option("--open", help="Also open it in a web browser.")]
GatewayArg = Annotated[str | None, typer.Argument(help="The gateway (default: every one in the state).")]


def console_cmd(ctx: typer.Context, gateway: GatewayArg = None, open_it: OpenFlag = False) -> None:
    """Print the web console's URL; log in there with the admin key or a client key."""
    ws = globals_of(ctx).workspace()
    state = ws.store.read()
    gateways = {r.name: r for r in state.resources.values() if r.kind == "gateway"}
    if not gateways:
        raise no_gateway(ws)
    if gateway is not None and gateway not in gateways:
        raise GpuformError(f"no gateway named {gateway!r} in the state",
                           f"Name one of: {', '.join(sorted(gateways))}.")
    for name in [gateway] if gateway else sorted(gateways):
        url = console_url(str(gateways[name].attributes["advertise_url"]))
        print(url)
        if open_it and not webbrowser.open(url):
            print(f"(no web browser to open here; open {url} yourself)")
    print(f"Log in with a client API key, or the admin key: the gateway's `admin_key`, or the one gpuform "
          f"generated, {_key_file(ws, gateway or sorted(gateways)[0])}.", file=sys.stderr)


def _key_file(ws: Workspace, gateway: str) -> str:
    """Where the gateway's generated admin key is kept: the file (local backend) or the backend's secrets."""
    name = f"gateway.{gateway}.admin_key"
    if isinstance(ws.store, LocalStateStore) and (path := ws.store.secret_path(name)).exists():
        return f"in {path}"
    return f"kept as the secret {name} of the state backend {ws.store.describe()}"
