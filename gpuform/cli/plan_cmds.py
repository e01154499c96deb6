"""validate, plan, apply, destroy."""

from __future__ import annotations

import functools
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from gpuform.cli.common import (
    Lock,
    LockTimeout,
    err_console,
    globals_of,
    locked_if,
    out_console,
    print_diagnostics,
    print_error,
    use_colour,
)
from gpuform.config.load import Config, load
from gpuform.diagnostics import Diagnostic
from gpuform.engine.apply import ApplyResult
from gpuform.engine.context import Workspace
from gpuform.engine.operations import (
    Estimator,
    Planned,
    check_saved_plan,
    desired_state,
    load_config,
    make_plan,
    read_plan,
    run_apply,
    save_plan,
)
from gpuform.errors import ConfigError, Interrupted
from gpuform.plan.model import Action
from gpuform.plan.render import render_json, render_markdown, render_text
from gpuform.state.store import audit_event

TARGET_WARNING = ("Warning: Resource targeting is in effect. You are creating a plan that may not represent all of "
                  "the changes your configuration asks for. Targeting is for exceptional situations such as "
                  "recovering from mistakes; it is not for routine use.")
Targets = Annotated[list[str], typer.Option("--target", "-target", metavar="ADDR",
                                                help="Limit to ADDR and its dependencies (repeatable).")]
Replace = Annotated[list[str], typer.Option("--replace", "-replace", metavar="ADDR",
                                                help="Replace ADDR even if unchanged (repeatable).")]
Parallelism = Annotated[int, typer.Option("--parallelism", min=1, help="Resources refreshed or applied at once.")]

NoColor = Annotated[bool, typer.Option("--no-color", "-no-color", help="No colour in output.")]


def validate(ctx: typer.Context,
             json_out: Annotated[bool, typer.Option("--json", help="Diagnostics as JSON.")] = False) -> None:
    """Check every file of the configuration (syntax, types, references, cycles) without touching anything;
    needs no values from the environment (they are unknown until plan)."""
    g = globals_of(ctx)
    try:
        config = load(g.directory.resolve(), g.variables, require_env=False)
        diags: list[Diagnostic] = config.warnings
    except ConfigError as exc:
        diags = exc.diagnostics
    errors = [d for d in diags if d.severity == "error"]
    if json_out:
        sys.stdout.write(json.dumps(diagnostics_json(diags), indent=2) + "\n")
    else:
        print_diagnostics(diags)
        if not errors:
            out_console.print("[green]Success![/green] The configuration is valid.")
    raise typer.Exit(1 if errors else 0)


def plan_cmd(ctx: typer.Context,
             out: Annotated[Path | None, typer.Option("-out", "--out", metavar="FILE",
                                                      help="Save the plan to FILE.")] = None,
             detailed_exitcode: Annotated[bool, typer.Option(
                 "--detailed-exitcode", "-detailed-exitcode",
                 help="Exit 0: no changes, 1: error, 2: changes.")] = False,
             json_out: Annotated[bool, typer.Option("--json", help="Terraform-shaped plan JSON.")] = False,
             markdown: Annotated[bool, typer.Option("--markdown", help="Markdown for a pull request.")] = False,
             target: Targets = [],  # noqa: B006
             replace: Replace = [],  # noqa: B006
             destroy: Annotated[bool, typer.Option("--destroy", help="Plan to destroy everything.")] = False,
             refresh_only: Annotated[bool, typer.Option("--refresh-only", help="Only record drift.")] = False,
             refresh: Annotated[bool, typer.Option("--refresh/--no-refresh", help="Read reality first.")] = True,
             parallelism: Parallelism = 10,
             lock: Lock = True,
             lock_timeout: LockTimeout = "0s",
             no_color: NoColor = False) -> None:
    """Show what apply would change, with drift found by refresh and the cost of each endpoint."""
    g = globals_of(ctx)
    g.colour = g.colour and not no_color
    mode = "destroy" if destroy else ("refresh-only" if refresh_only else "normal")
    if target:
        err_console.print(f"[yellow]{TARGET_WARNING}[/yellow]")
    try:
        ws = g.workspace()
        config = load_config(ws, g.variables)
        try:
            with locked_if(ws.store, lock, "plan", lock_timeout):
                planned = make_plan(ws, config, mode, refresh, tuple(target), tuple(replace), parallelism,
                                    _estimator(config) if refresh and mode == "normal" else None)
        finally:
            ws.close()
    except ConfigError as exc:
        if json_out:
            sys.stdout.write(json.dumps(diagnostics_json(exc.diagnostics), indent=2) + "\n")
            raise typer.Exit(1) from None
        raise
    if out:
        save_plan(out, planned.plan)
    if json_out:
        sys.stdout.write(render_json(planned.plan) + "\n")
    elif markdown:
        sys.stdout.write(render_markdown(planned.plan, str(g.directory)) + "\n")
    else:
        sys.stdout.write(render_text(planned.plan, use_colour(g)) + "\n")
        if out:
            out_console.print(f"\nSaved the plan to {out}. To perform exactly these actions: gpuform apply {out}")
    if planned.plan.refresh_errors:
        err_console.print(f"[red]Error:[/red] {len(planned.plan.refresh_errors)} resource(s) could not be refreshed "
                          "(see the warnings above), so this plan may not match reality. Fix what blocks the refresh, "
                          "or plan with -refresh=false to plan from the saved state on purpose.")
        raise typer.Exit(1)
    if detailed_exitcode and planned.plan.has_changes:
        raise typer.Exit(2)


def _estimator(config: Config) -> Estimator:
    """Expected monthly costs from recorded traffic, by the simulator (imported only when a plan refreshes)."""
    from gpuform.simulate.estimate import estimates

    return functools.partial(estimates, config)


def apply_cmd(ctx: typer.Context,
              planfile: Annotated[Path | None, typer.Argument(help="A plan saved with plan -out.")] = None,
              auto_approve: Annotated[bool, typer.Option("--auto-approve", "-auto-approve",
                                                         help="Skip the confirmation prompt.")] = False,
              target: Targets = [],  # noqa: B006
              replace: Replace = [],  # noqa: B006
              refresh_only: Annotated[bool, typer.Option("--refresh-only", help="Only record drift.")] = False,
              parallelism: Parallelism = 10,
              lock: Lock = True,
              lock_timeout: LockTimeout = "0s",
              no_wait: Annotated[bool, typer.Option("--no-wait", "-no-wait", help="Do not wait for endpoints' "
                                                    "min_workers to be ready.")] = False,
              wait_timeout: Annotated[float | None, typer.Option(
                  "--wait-timeout", "-wait-timeout", metavar="SECONDS",
                  help="How long to wait for min_workers (default: the worker's ready_timeout + 30 s).")] = None,
              no_color: NoColor = False) -> None:
    """Make reality match the configuration (or carry out a saved plan exactly)."""
    globals_of(ctx).colour &= not no_color
    mode = "refresh-only" if refresh_only else "normal"
    _run(ctx, "apply", mode, planfile, auto_approve, tuple(target), tuple(replace), parallelism,
         lock_timeout if lock else None, no_wait, wait_timeout)


def destroy_cmd(ctx: typer.Context,
                auto_approve: Annotated[bool, typer.Option("--auto-approve", "-auto-approve",
                                                           help="Skip the confirmation prompt.")] = False,
                target: Targets = [],  # noqa: B006
                parallelism: Parallelism = 10,
                lock: Lock = True,
                lock_timeout: LockTimeout = "0s",
                no_color: NoColor = False) -> None:
    """Destroy everything gpuform manages in this directory (endpoints drain first)."""
    globals_of(ctx).colour &= not no_color
    _run(ctx, "destroy", "destroy", None, auto_approve, tuple(target), (), parallelism,
         lock_timeout if lock else None)


def _run(ctx: typer.Context, operation: str, mode: str, planfile: Path | None, auto_approve: bool,
         targets: tuple[str, ...], replace: tuple[str, ...], parallelism: int, lock_timeout: str | None,
         no_wait: bool = False, wait_timeout: float | None = None) -> None:
    """Plan (or read a saved plan), confirm, apply; ``lock_timeout`` None: -lock=false."""
    g = globals_of(ctx)
    if targets:
        err_console.print(f"[yellow]{TARGET_WARNING}[/yellow]")
    ws = g.workspace()
    ws.no_wait, ws.wait_timeout = no_wait, wait_timeout
    try:
        with locked_if(ws.store, lock_timeout is not None, operation, lock_timeout or "0s"):
            planned = _saved(ws, planfile, g.variables) if planfile else _fresh(ws, g.variables, mode, targets, replace,
                                                                                parallelism)
            if not planfile:
                sys.stdout.write(render_text(planned.plan, use_colour(g)) + "\n")
            if not planned.plan.has_changes and planned.plan.mode != "refresh-only":
                if planned.plan.drift:
                    ws.store.write(planned.plan.refreshed or planned.state)
                out_console.print("\nApply complete! Resources: 0 added, 0 changed, 0 destroyed.")
                return
            if not (planfile or auto_approve) and not _confirm(operation, g.interactive):
                err_console.print("Apply cancelled.")
                raise typer.Exit(1)
            result = _apply_with_interrupts(ws, planned, parallelism)
            ws.store.record(audit_event(operation, _summary(planned, result)))
    finally:
        ws.close()
    _report(planned, result, operation)


def _fresh(ws: Workspace, variables: dict[str, str], mode: str, targets: tuple[str, ...], replace: tuple[str, ...],
           parallelism: int) -> Planned:
    config = None if mode == "destroy" and not _has_config(ws) else load_config(ws, variables,
                                                                                 local_files=mode != "destroy")
    return make_plan(ws, config, mode, True, targets, replace, parallelism)


def _has_config(ws: Workspace) -> bool:
    return ws.config_dir.is_dir() and any(p.suffix in (".yaml", ".yml") for p in ws.config_dir.iterdir())


def _saved(ws: Workspace, planfile: Path, variables: dict[str, str]) -> Planned:
    saved = read_plan(planfile)
    state = ws.store.read()
    if not state.exists:
        state.lineage = saved.lineage
    config = load_config(ws, variables)
    desired = desired_state(ws, config, state)
    check_saved_plan(saved, state, desired)
    return Planned(saved, desired, state)


def _confirm(operation: str, interactive: bool) -> bool:
    verb = "destroy all resources" if operation == "destroy" else "perform these actions"
    if not interactive or not sys.stdin.isatty():
        err_console.print(f"\n[red]Error:[/red] refusing to {verb} without confirmation: stdin is not a terminal.\n"
                          "  hint: review the plan and pass --auto-approve, or apply a saved plan file.")
        return False
    answer = typer.prompt(f"\nDo you want to {verb}? Only 'yes' will be accepted", default="", show_default=False)
    return str(answer).strip() == "yes"


def _apply_with_interrupts(ws: Workspace, planned: Planned, parallelism: int) -> ApplyResult:
    """First Ctrl-C: finish what is in flight and save state; a second one stops at once."""
    previous = signal.getsignal(signal.SIGINT)

    def on_int(signum: int, frame: FrameType | None) -> None:
        if ws.cancelled.is_set():
            raise KeyboardInterrupt
        ws.cancelled.set()
        err_console.print("\n[yellow]Interrupt received: finishing operations in flight and saving state "
                          "(press Ctrl-C again to stop at once)...[/yellow]")

    signal.signal(signal.SIGINT, on_int)
    try:
        return run_apply(ws, planned, parallelism)
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary(planned: Planned, result: ApplyResult) -> str:
    """One line for the audit log: what was applied, what failed."""
    done = sorted(result.applied)
    failed = sorted(result.failed)
    text = f"serial {planned.state.serial}: {len(done)} applied ({', '.join(done[:20])})"
    return text + (f"; {len(failed)} failed ({', '.join(failed[:20])})" if failed else "")


def diagnostics_json(diags: list[Diagnostic]) -> dict[str, Any]:
    """Diagnostics as Terraform's validate -json writes them."""
    errors = [d for d in diags if d.severity == "error"]
    return {"format_version": "1.0", "valid": not errors, "error_count": len(errors),
            "warning_count": len(diags) - len(errors), "diagnostics": [d.to_json() for d in diags]}


def _report(planned: Planned, result: ApplyResult, operation: str) -> None:
    for addr, message in sorted(result.failed.items()):
        head, _, hint = message.partition("\n  hint: ")
        print_error(f"{addr}: {head}", hint)
    for addr in result.skipped:
        err_console.print(f"[yellow]Skipped:[/yellow] {addr} (a resource it depends on failed)")
    counts = {"add": 0, "change": 0, "destroy": 0}
    done = set(result.applied)
    for c in planned.plan.changes:
        if c.address in done:
            counts["add"] += c.action in (Action.CREATE, Action.REPLACE)
            counts["change"] += c.action == Action.UPDATE
            counts["destroy"] += c.action in (Action.DELETE, Action.REPLACE)
    word = "Destroy" if operation == "destroy" else "Apply"
    imported = sum(c.importing is not None for c in planned.plan.changes)  # saved with the starting state
    counted = f"{imported} imported, " if imported else ""
    if result.interrupted:
        raise Interrupted("apply was interrupted; state was saved for what finished",
                          "Run `gpuform plan` to see what remains, then apply again.")
    if result.failed or result.skipped:
        err_console.print(f"\n[red]{word} finished with errors.[/red] Resources: {counted}{counts['add']} added, "
                          f"{counts['change']} changed, {counts['destroy']} destroyed; "
                          f"{len(result.failed)} failed, {len(result.skipped)} skipped.")
        raise typer.Exit(1)
    out_console.print(f"\n[green]{word} complete![/green] Resources: {counted}{counts['add']} added, "
                      f"{counts['change']} changed, {counts['destroy']} destroyed.")
