"""Shared CLI plumbing: global options, printing diagnostics and errors, exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from gpuform.config.types import parse_duration
from gpuform.diagnostics import Diagnostic
from gpuform.engine.context import Workspace
from gpuform.engine.operations import workspace
from gpuform.errors import GpuformError
from gpuform.state.store import StateStore, locked

JsonFlag = Annotated[bool, typer.Option("--json", "-json", help="Machine-readable JSON.")]
LockTimeout = Annotated[str, typer.Option("--lock-timeout", metavar="DURATION",
                                          help="How long to wait for the state lock (e.g. 30s, 5m).")]
Lock = Annotated[bool, typer.Option("--lock/--no-lock", help="Hold the state lock (-lock=false: do not).")]

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


@dataclass
class Globals:
    directory: Path = Path(".")
    state_dir: Path | None = None
    variables: dict[str, str] = field(default_factory=dict)
    colour: bool = True
    backend_options: dict[str, str] = field(default_factory=dict)
    interactive: bool = True

    def workspace(self) -> Workspace:
        ws = workspace(self.directory, self.state_dir, self.backend_options)
        ws.on_event = _progress
        ws.on_transfer = _transfer
        return ws


def _progress(address: str, message: str) -> None:
    if message in ("done", "failed"):
        return
    err_console.print(f"[dim]{address}: {message}[/dim]")


_bars: dict[str, tuple[Progress, TaskID]] = {}
_bars_lock = threading.Lock()


def _transfer(what: str, done: int, total: int) -> None:
    """A progress bar per copy (volume staging), drawn on stderr; plain lines when stderr is not a terminal."""
    with _bars_lock:
        if not err_console.is_terminal:
            if done >= total:
                err_console.print(f"[dim]{what}: copied {total} bytes[/dim]")
            return
        if what not in _bars:
            progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), console=err_console, transient=False)
            progress.start()
            _bars[what] = (progress, progress.add_task(what, total=total))
        progress, task = _bars[what]
        progress.update(task, completed=done, total=total)
        if done >= total:
            progress.stop()
            del _bars[what]


def globals_of(ctx: typer.Context) -> Globals:
    found = ctx.find_root().obj
    if isinstance(found, Globals):
        return found
    return Globals()


def no_gateway(ws: Workspace) -> GpuformError:
    """The error of a command that needs a gateway when the state has none: where it looked, and -C."""
    return GpuformError(f"no gateway in the state of {ws.config_dir} ({ws.store.describe()})",
                        "Run `gpuform apply` there first, or name the directory you applied with -C (for "
                        "example: gpuform -C examples/quickstart console).")


def use_colour(g: Globals) -> bool:
    return g.colour and sys.stdout.isatty() and "NO_COLOR" not in os.environ


def print_diagnostics(diags: list[Diagnostic]) -> None:
    for d in diags:
        colour = "red" if d.severity == "error" else "yellow"
        head, _, rest = d.render().partition("\n")
        err_console.print(f"[{colour}]{_escape(head)}[/{colour}]")
        if rest:
            err_console.print(_escape(rest))


def print_error(message: str, hint: str = "") -> None:
    err_console.print(f"[red]Error:[/red] {_escape(message)}")
    if hint:
        err_console.print(f"  [dim]hint:[/dim] {_escape(hint)}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def parse_vars(pairs: list[str]) -> dict[str, str]:
    return parse_pairs(pairs, "--var")


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option} takes NAME=VALUE, got {pair!r}")
        out[key] = value
    return out


def read_var_files(paths: list[Path]) -> dict[str, str]:
    """Variables from YAML files of ``NAME: VALUE`` (values as written; later files win)."""
    import yaml

    out: dict[str, str] = {}
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise typer.BadParameter(f"cannot read variables from {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise typer.BadParameter(f"{path} must be a mapping of NAME: VALUE")
        out.update({str(k): v if isinstance(v, str) else json_text(v) for k, v in data.items()})
    return out


def json_text(value: object) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def locked_if(store: StateStore, lock: bool, operation: str, timeout: str) -> contextlib.AbstractContextManager[Any]:
    """The state lock for ``operation`` (waiting up to ``timeout``, a duration), or nothing with -lock=false."""
    if not lock:
        return contextlib.nullcontext()
    try:
        seconds = float(parse_duration(timeout))
    except ValueError as exc:
        raise typer.BadParameter(f"-lock-timeout: {exc}") from None
    return locked(store, operation, seconds)
