"""Runtime commands: gateway (foreground), status, logs, usage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def gateway_cmd(config: Annotated[Path, typer.Option("--config", help="Runtime configuration written by apply.")],
                listen: Annotated[str | None, typer.Option("--listen", help="Override host:port.")] = None) -> None:
    """Run a gateway in the foreground (apply runs it supervised as the gateway resource)."""
    from gpuform.gateway.server import serve

    raise typer.Exit(serve(config, listen))


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway_cmd)
