"""The ``gpuform`` command. Thin: parse, call the library, render, set the exit code.

Exit codes, as Terraform's: 0 success; 1 any error (a usage error, a refresh error, a stale saved plan, a
declined or partly applied apply included); 2 ``plan -detailed-exitcode`` with changes; 70 a bug (an
unexpected exception, with the traceback saved to a file); 130 interrupted. Terraform's single-dash options
are accepted everywhere (:mod:`gpuform.cli.argv`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuform import __version__
from gpuform.cli import (
    console_cmd,
    plan_cmds,
    requests_cmd,
    runtime_cmds,
    simulate_cmd,
    state_cmds,
    templates_cmd,
    workspace_cmds,
)
from gpuform.cli.argv import normalise
from gpuform.cli.common import Globals, parse_pairs, parse_vars, print_diagnostics, print_error, read_var_files
from gpuform.errors import ConfigError, GpuformError, InputError, Interrupted

EXIT_BUG = 70

app = typer.Typer(
    name="gpuform", no_args_is_help=True, add_completion=True, pretty_exceptions_show_locals=False,
    help="Serverless GPU endpoints on your own machines, declared in YAML and applied like Terraform.",
)


def _print_version(value: bool) -> None:
    if value:
        print(f"gpuform {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(ctx: typer.Context,
         directory: Annotated[Path, typer.Option("-C", "--chdir", help="Configuration directory.")] = Path("."),
         state_dir: Annotated[Path | None, typer.Option("--state-dir", help="Local working directory (default: the "
                                                        "local backend's path, DIR/state).")] = None,
         var: Annotated[list[str], typer.Option("--var", metavar="NAME=VALUE", help="Set a variable (repeatable).")]
         = [],  # noqa: B006
         var_file: Annotated[list[Path], typer.Option("--var-file", metavar="FILE", help="Variables from a YAML "
                                                      "file of NAME: VALUE (repeatable).")] = [],  # noqa: B006
         backend_config: Annotated[list[str], typer.Option("--backend-config", metavar="KEY=VALUE",
                                                           help="Set a backend option, e.g. url=postgresql://…")]
         = [],  # noqa: B006
         no_color: Annotated[bool, typer.Option("--no-color", help="No colour in output.")] = False,
         input_: Annotated[bool, typer.Option("--input/--no-input", help="Ask for confirmation when needed "
                                              "(-input=false: never ask; fail instead).")] = True,
         version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    variables = {**read_var_files(var_file), **parse_vars(var)}
    ctx.obj = Globals(directory=directory, state_dir=state_dir, variables=variables, colour=not no_color,
                      backend_options=parse_pairs(backend_config, "--backend-config"), interactive=input_)


@app.command("version")
def version_cmd(json_out: Annotated[bool, typer.Option("--json", help="As JSON.")] = False) -> None:
    """Print the version."""
    if json_out:
        print(json.dumps({"gpuform_version": __version__}))
    else:
        print(f"gpuform {__version__}")


app.command("validate")(plan_cmds.validate)
app.command("plan")(plan_cmds.plan_cmd)
app.command("apply")(plan_cmds.apply_cmd)
app.command("destroy")(plan_cmds.destroy_cmd)
app.add_typer(state_cmds.state_app, name="state")
app.add_typer(workspace_cmds.workspace_app, name="workspace")
app.command("init")(workspace_cmds.init_cmd)
app.command("import")(state_cmds.import_cmd)
app.command("output")(state_cmds.output_cmd)
app.command("force-unlock")(state_cmds.force_unlock_cmd)
app.command("schema")(state_cmds.schema_cmd)
app.command("simulate")(simulate_cmd.simulate_cmd)
app.command("templates")(templates_cmd.templates_cmd)
runtime_cmds.register(app)
app.command("requests")(requests_cmd.requests_cmd)
app.command("console")(console_cmd.console_cmd)


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
    args = normalise(list(sys.argv[1:] if argv is None else argv))
    try:
        result = command.main(args=args, prog_name="gpuform", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:  # a usage error: exit 1, never 2 (which means "changes")
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"Error: {exc.message}", file=sys.stderr)
        return 1 if int(exc.exit_code) else 0
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        return 130
    except (ConfigError, InputError) as exc:
        print_diagnostics(exc.diagnostics)
        return 1
    except Interrupted as exc:
        print_error(exc.message, exc.hint)
        return 130
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
