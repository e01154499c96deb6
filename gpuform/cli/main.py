"""The ``gpuform`` command. Thin: parse, call the library, render, set the exit code.

Exit codes: 0 success; 1 error (nothing or everything failed); 2 ``plan --detailed-exitcode`` with
changes; 3 apply partly done; 4 apply declined or saved plan stale; 70 a bug (unexpected exception);
130 interrupted.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuform import __version__
from gpuform.cli import plan_cmds, runtime_cmds, state_cmds
from gpuform.cli.common import Globals, parse_vars, print_diagnostics, print_error
from gpuform.errors import ConfigError, GpuformError, Interrupted, StalePlan

EXIT_BUG = 70

app = typer.Typer(
    name="gpuform", no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
    help="Serverless GPU endpoints on your own machines, declared in YAML and applied like Terraform.",
)


@app.callback()
def root(ctx: typer.Context,
         directory: Annotated[Path, typer.Option("-C", "--chdir", help="Configuration directory.")] = Path("."),
         state_dir: Annotated[Path | None, typer.Option("--state-dir", help="State directory (default: DIR/state).")]
         = None,
         var: Annotated[list[str], typer.Option("--var", metavar="NAME=VALUE", help="Set a variable (repeatable).")]
         = [],  # noqa: B006
         no_color: Annotated[bool, typer.Option("--no-color", help="No colour in output.")] = False) -> None:
    ctx.obj = Globals(directory=directory, state_dir=state_dir, variables=parse_vars(var), colour=not no_color)


@app.command()
def version() -> None:
    """Print the version."""
    print(f"gpuform {__version__}")


app.command("validate")(plan_cmds.validate)
app.command("plan")(plan_cmds.plan_cmd)
app.command("apply")(plan_cmds.apply_cmd)
app.command("destroy")(plan_cmds.destroy_cmd)
app.add_typer(state_cmds.state_app, name="state")
app.command("import")(state_cmds.import_cmd)
app.command("output")(state_cmds.output_cmd)
app.command("force-unlock")(state_cmds.force_unlock_cmd)
app.command("schema")(state_cmds.schema_cmd)
runtime_cmds.register(app)


def _plain_flags(command: Any) -> None:
    """Help shows on/off flags without a type (Typer prints ``<bool>`` as if they took a value).

    ``command`` is a Typer command or group (Typer vendors its own click, so click's types do not apply)."""
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    make_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_flags(sub)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error becomes a message and an exit code, never a traceback (but for bugs)."""
    command = typer.main.get_command(app)
    _plain_flags(command)
    try:
        result = command.main(args=argv, prog_name="gpuform", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"Error: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print_diagnostics(exc.diagnostics)
        return 1
    except Interrupted as exc:
        print_error(exc.message, exc.hint)
        return 130
    except StalePlan as exc:
        print_error(exc.message, exc.hint)
        return 4
    except GpuformError as exc:
        print_error(exc.message, exc.hint)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except Exception:  # the last resort: a bug, reported as one
        return _report_bug()
    return result if isinstance(result, int) else 0


def _report_bug() -> int:
    with tempfile.NamedTemporaryFile("w", prefix="gpuform-crash-", suffix=".log", delete=False) as fh:
        traceback.print_exc(file=fh)
        path = fh.name
    exc = sys.exc_info()[1]
    print_error(f"gpuform hit an unexpected error ({type(exc).__name__}: {exc}). This is a bug in gpuform.",
                f"Please report it with the command you ran and the traceback saved in {path}.")
    return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
