"""``gpuform templates``: the worker templates an endpoint's ``worker.template`` may name."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from gpuform.cli.common import out_console
from gpuform.workerspec import TEMPLATES, Template


def templates_cmd(json_out: Annotated[bool, typer.Option("--json", help="As JSON.")] = False) -> None:
    """List the worker templates: what each runs, what it needs, and its examples under examples/."""
    if json_out:
        print(json.dumps({"templates": [dataclasses.asdict(t) for t in TEMPLATES.values()]}, indent=2))
        return
    width = max(len(name) for name in TEMPLATES) + 2
    for template in TEMPLATES.values():
        out_console.print(_entry(template, width), markup=False)
    out_console.print("Set one with `worker: {template: NAME}`; docs/workers-templates.md describes each.",
                      style="dim", markup=False)


def _entry(template: Template, width: int) -> str:
    pad = " " * width
    lines = [f"{template.name:<{width}}{template.description}", f"{pad}needs: {template.needs}"]
    if template.examples:
        lines.append(f"{pad}example: " + ", ".join(f"examples/{e}" for e in template.examples))
    return "\n".join(lines)
