"""Terraform's way of writing options, accepted as it is in scripts and CI:

- single-dash long options (``-out=plan``, ``-var x=1``, ``-detailed-exitcode``) are the double-dash ones;
- ``-NAME=true|false`` for on/off options (``-lock=false``, ``-refresh=false``, ``-input=false``);
- options that belong to every command (``-var``, ``-var-file``, ``-backend-config``, ``-C``, ``-state-dir``)
  may come after the command, as Terraform writes them (``plan -var x=1``).
"""

from __future__ import annotations

import re

_SINGLE = re.compile(r"^-([a-z][a-z0-9]*(?:-[a-z0-9]+)+|[a-z][a-z0-9]+)(=.*)?$")
_SWITCH = re.compile(r"^--([a-z][a-z-]*)=(true|false)$", re.IGNORECASE)
ON_OFF = frozenset({"lock", "refresh", "input", "color"})
GLOBAL_WITH_VALUE = frozenset({"-C", "--chdir", "--state-dir", "--var", "--var-file", "--backend-config",
                               "--workspace"})


def normalise(argv: list[str]) -> list[str]:
    """``argv`` with Terraform's spellings turned into this CLI's."""
    spelled = [_switch(_double(arg)) for arg in argv]
    return _hoist(spelled)


def _double(arg: str) -> str:
    match = _SINGLE.match(arg)
    return f"--{match.group(1)}{match.group(2) or ''}" if match else arg


def _switch(arg: str) -> str:
    match = _SWITCH.match(arg)
    if not match or match.group(1) not in ON_OFF:
        return arg
    name, value = match.group(1), match.group(2).lower()
    return f"--{name}" if value == "true" else f"--no-{name}"


def _hoist(argv: list[str]) -> list[str]:
    """Move options every command takes from after the command name to before it."""
    command = next((i for i, a in enumerate(argv) if not a.startswith("-") and not _is_value(argv, i)), None)
    if command is None:
        return argv
    moved: list[str] = []
    rest: list[str] = []
    i = command + 1
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in GLOBAL_WITH_VALUE:
            takes_next = "=" not in arg and i + 1 < len(argv)
            moved += argv[i:i + 2] if takes_next else [arg]
            i += 2 if takes_next else 1
            continue
        rest.append(arg)
        i += 1
    return argv[:command] + moved + argv[command:command + 1] + rest


def _is_value(argv: list[str], i: int) -> bool:
    """Whether ``argv[i]`` is the value of the option before it (``-C DIR``)."""
    return i > 0 and argv[i - 1] in GLOBAL_WITH_VALUE
