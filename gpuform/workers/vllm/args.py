"""Endpoint env → ``vllm serve`` flags, the way RunPod's worker-vllm maps them, checked against a flag table
generated from the pinned vLLM (``vllm_flags.json``, by ``gen_flags.py``), so plan can check flags without
vLLM installed.

- An env var named like a flag in UPPER_SNAKE becomes that flag (``MAX_MODEL_LEN=4096`` →
  ``--max-model-len 4096``); on/off flags take true/1/yes/on or false/0/no/off and become ``--flag`` or
  ``--no-flag`` (never ``--flag false``, which vLLM would read as true).
- Aliases: ``MODEL_NAME``, ``MODEL_REVISION``, ``TOKENIZER_NAME``, ``OPENAI_SERVED_MODEL_NAME_OVERRIDE``,
  ``CUSTOM_CHAT_TEMPLATE``, ``VLLM_CONFIG_FILE``.
- ``VLLM_EXTRA_ARGS`` is appended last (shell-split); each option in it must exist.
- ``LORA_MODULES`` (see :mod:`.lora`) names adapters inside the endpoint's volume; the worker adds
  ``--enable-lora`` and one ``--lora-modules`` item per adapter with its path on the volume
  (:func:`lora_args`).
- Flags vLLM removed (``SWAP_SPACE``, ``ROPE_SCALING``, ``TASK``…) are reported, with the replacement when
  there is one, instead of crashing the worker. Other env vars are plain environment.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from gpuform.workers.vllm import lora

TABLE = Path(__file__).with_name("vllm_flags.json")
ALIASES = {"MODEL_NAME": "--model", "MODEL_REVISION": "--revision", "TOKENIZER_NAME": "--tokenizer",
           "OPENAI_SERVED_MODEL_NAME_OVERRIDE": "--served-model-name", "CUSTOM_CHAT_TEMPLATE": "--chat-template",
           "VLLM_CONFIG_FILE": "--config"}
RESERVED = {"HOST", "PORT", "API_KEY", "HELP", "MODEL", "CONFIG", "MODEL_TAG"}  # set by the worker, or too generic
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
UNSET_WHEN_ZERO = {"MAX_NUM_BATCHED_TOKENS"}


@dataclass(frozen=True)
class Flag:
    env: str
    option: str
    kind: str  # value | bool_optional | store_true | append | positional
    negative: str | None
    choices: tuple[str, ...] | None
    type: str | None = None  # the parser's type in the pinned vLLM (int, float, loads, human_readable_int, …)


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    severity: str = "error"


@dataclass(frozen=True)
class FlagTable:
    version: str
    flags: dict[str, Flag]
    by_option: dict[str, Flag]
    removed: dict[str, str]

    @classmethod
    def load(cls, path: Path = TABLE) -> FlagTable:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        flags: dict[str, Flag] = {}
        by_option: dict[str, Flag] = {}
        for raw in data["flags"]:
            if raw["kind"] == "positional" or not raw["option_strings"]:
                continue
            choices = tuple(str(c) for c in raw["choices"]) if raw.get("choices") else None
            flag = Flag(raw["env"], raw["option_strings"][0], raw["kind"], raw.get("negative_flag"), choices,
                        raw.get("type"))
            flags[flag.env] = flag
            for option in raw["option_strings"]:
                by_option[option] = flag
        notes = {r["env"]: r for r in data.get("removed_flags") or []}
        removed = {}
        for env in data.get("absent_legacy_env") or []:
            note = notes.get(env, {})
            hint = f"; use {note['replacement']} instead" if note.get("replacement") else ""
            extra = f" ({note['note']})" if note.get("note") else ""
            removed[env] = f"{env} is not a flag of vLLM {data['vllm_version']} (removed){hint}{extra}"
        return cls(str(data["vllm_version"]), flags, by_option, removed)


@cache
def table() -> FlagTable:
    return FlagTable.load()


def build_args(env: Mapping[str, str], flags: FlagTable | None = None) -> tuple[list[str], list[Problem]]:
    """vLLM arguments from ``env``, and every problem found (the worker logs them; plan reports them)."""
    flags = flags or table()
    argv: list[str] = []
    problems: list[Problem] = []
    for key in sorted(env):
        value = str(env[key])
        if key in RESERVED or key in ("VLLM_EXTRA_ARGS", lora.ENV):
            continue
        if key in ALIASES:
            argv += [ALIASES[key], value]
        elif key in flags.flags:
            argv += _flag(flags.flags[key], value, problems)
        elif key in flags.removed:
            problems.append(Problem(key, flags.removed[key] + "; remove it from the endpoint's env", "warning"))
    extra = env.get("VLLM_EXTRA_ARGS")
    if extra:
        argv += _extra(extra, flags, problems)
    return argv, problems


def _flag(flag: Flag, value: str, problems: list[Problem]) -> list[str]:
    if flag.kind in ("bool_optional", "store_true"):
        lowered = value.strip().lower()
        if lowered not in TRUE | FALSE:
            problems.append(Problem(flag.env, f"{flag.env}={value!r} is not on/off; use true or false"))
            return []
        if lowered in TRUE:
            return [flag.option]
        return [flag.negative] if flag.negative else []
    if flag.env in UNSET_WHEN_ZERO and value.strip() == "0":
        return []
    if flag.choices and value not in flag.choices:
        problems.append(Problem(flag.env, f"{flag.env}={value!r} is not one of {', '.join(flag.choices)}"))
        return []
    wrong = _type_problem(flag, value)
    if wrong:
        problems.append(Problem(flag.env, wrong))
        return []
    return [flag.option, value]


_HUMAN_INT = re.compile(r"^-?\d+(\.\d+)?\s*([kKmMgGtT]i?)?$")


def _type_problem(flag: Flag, value: str) -> str:
    """Why ``value`` would not parse as the flag's type in vLLM ('' when it would, or the type is not checked)."""
    text = value.strip()
    if flag.type == "int" and not re.fullmatch(r"-?\d+", text):
        return f"{flag.env}={value!r} is not a whole number ({flag.option} takes an int)"
    if flag.type == "float":
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            return f"{flag.env}={value!r} is not a finite number ({flag.option} takes a float)"
    auto = flag.type == "human_readable_int_or_auto" and text.lower() == "auto"
    if flag.type in ("human_readable_int", "human_readable_int_or_auto") and not (_HUMAN_INT.match(text) or auto):
        return f"{flag.env}={value!r} is not a number such as 4096, 8k or 1M"
    if flag.type == "loads":
        try:
            json.loads(text)
        except ValueError:
            return f"{flag.env}={value!r} is not JSON ({flag.option} takes a JSON value)"
    return ""


def _extra(extra: str, flags: FlagTable, problems: list[Problem]) -> list[str]:
    try:
        words = shlex.split(extra)
    except ValueError as exc:
        problems.append(Problem("VLLM_EXTRA_ARGS", f"VLLM_EXTRA_ARGS cannot be split: {exc}"))
        return []
    for word in words:
        option = word.split("=", 1)[0]
        if option.startswith("--") and option not in flags.by_option:
            close = difflib.get_close_matches(option, list(flags.by_option), n=1)
            hint = f' Did you mean "{close[0]}"?' if close else ""
            problems.append(Problem("VLLM_EXTRA_ARGS", f"{option} is not a flag of vLLM {flags.version}.{hint}"))
    return words


def lora_args(env: Mapping[str, str], volume_root: str) -> tuple[list[str], list[Problem]]:
    """``--enable-lora --lora-modules ITEM...`` for the adapters ``LORA_MODULES`` declares, their paths under
    ``volume_root`` (nothing when it is unset); problems as :func:`build_args` reports them."""
    value = env.get(lora.ENV)
    if value is None or not str(value).strip():
        return [], []
    adapters, found = lora.parse(str(value))
    problems = [Problem(lora.ENV, message) for message in found]
    if str(env.get("ENABLE_LORA", "true")).strip().lower() in FALSE:
        problems.append(Problem("ENABLE_LORA", f"ENABLE_LORA is off, but {lora.ENV} declares adapters; "
                                               "remove ENABLE_LORA (it is set for you) or LORA_MODULES"))
    if not adapters:
        return [], problems
    enable = [] if "ENABLE_LORA" in env else ["--enable-lora"]
    return [*enable, "--lora-modules", *(a.argument(volume_root) for a in adapters)], problems


def check_env(env: Mapping[str, Any]) -> list[Problem]:
    """Plan-time check of an endpoint's env for the vllm template."""
    text = {k: _env_text(v) for k, v in env.items()}
    return build_args(text)[1] + lora_args(text, lora.VOLUME_MOUNT)[1]


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
