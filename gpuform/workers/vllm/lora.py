"""LoRA adapters of a vLLM endpoint: ``LORA_MODULES`` in the endpoint's env, paths inside the endpoint's volume.

Accepted forms (RunPod's worker-vllm writes the first; vLLM's ``--lora-modules`` takes the others):

- a JSON list ``[{"name": "sql", "path": "adapters/sql", "base_model_name": "qwen"}, ...]``;
- one JSON object of that shape;
- ``name=path`` items separated by spaces (``sql=adapters/sql chat=adapters/chat``).

A path is relative to the root of the endpoint's volume (``/runpod-volume/adapters/sql`` means the same, as on
RunPod); a path outside the volume, or one that climbs out of it with ``..``, is refused. The parser is pure:
config checks, the gateway (which routes a request naming an adapter to its endpoint) and the worker (which
turns the adapters into ``--enable-lora --lora-modules ...``) all read ``LORA_MODULES`` with it.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

ENV = "LORA_MODULES"
VOLUME_MOUNT = "/runpod-volume"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
DEFAULT_MAX_RANK = 16  # vLLM's --max-lora-rank default


@dataclass(frozen=True)
class Adapter:
    """One adapter: the name clients send as ``model``, its directory relative to the volume root."""

    name: str
    path: str
    base_model_name: str | None = None

    def argument(self, volume_root: str) -> str:
        """The adapter as one ``--lora-modules`` item (JSON), its path made absolute under ``volume_root``."""
        item: dict[str, str] = {"name": self.name, "path": posixpath.join(volume_root, self.path)}
        if self.base_model_name:
            item["base_model_name"] = self.base_model_name
        return json.dumps(item)


def parse(value: str) -> tuple[list[Adapter], list[str]]:
    """The adapters ``value`` declares, and every problem found (each a sentence that says how to fix it)."""
    text = value.strip()
    if not text:
        return [], []
    if text[0] in "[{":
        return _from_json(text)
    adapters: list[Adapter] = []
    problems: list[str] = []
    for word in text.split():
        name, sep, path = word.partition("=")
        if not sep:
            problems.append(f'{ENV} item "{word}" is not name=path (or write a JSON list of '
                            '{"name": ..., "path": ...})')
            continue
        _add(adapters, problems, name, path, None)
    return adapters, problems


def _from_json(text: str) -> tuple[list[Adapter], list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [f"{ENV} is not valid JSON ({exc.msg} at character {exc.pos})"]
    items = data if isinstance(data, list) else [data]
    adapters: list[Adapter] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                not isinstance(item.get("path"), str):
            problems.append(f'{ENV} item {index} must be an object with string "name" and "path"')
            continue
        extra = sorted(set(item) - {"name", "path", "base_model_name"})
        if extra:
            problems.append(f'{ENV} item {index} has unknown keys {", ".join(extra)}; use name, path, base_model_name')
        base = item.get("base_model_name")
        _add(adapters, problems, item["name"], item["path"], str(base) if base else None)
    return adapters, problems


def _add(adapters: list[Adapter], problems: list[str], name: str, path: str, base: str | None) -> None:
    if not NAME.match(name):
        problems.append(f'{ENV}: adapter name "{name}" must be 1-128 letters, digits or ._:/- '
                        "(clients send it as `model`)")
        return
    if any(a.name == name for a in adapters):
        problems.append(f'{ENV}: adapter "{name}" is declared twice')
        return
    inner, why = volume_relative(path)
    if why:
        problems.append(f'{ENV}: adapter "{name}": {why}')
        return
    adapters.append(Adapter(name, inner, base))


def volume_relative(path: str) -> tuple[str, str]:
    """``path`` relative to the volume root, or ('', why not)."""
    text = path.strip()
    if text == VOLUME_MOUNT or text.startswith(VOLUME_MOUNT + "/"):
        text = text[len(VOLUME_MOUNT):]
    elif text.startswith("/"):
        return "", (f'path "{path}" is outside the volume; write it relative to the volume root '
                    f"(adapters/NAME) or under {VOLUME_MOUNT}/")
    inner = posixpath.normpath(text.lstrip("/")) if text.strip("/") else ""
    if not inner or inner in {".", ".."} or inner.startswith("../"):
        return "", f'path "{path}" does not name a directory inside the volume (e.g. adapters/NAME)'
    return inner, ""


def adapters_of(env: dict[str, Any]) -> list[Adapter]:
    """The well-formed adapters an endpoint's env declares (problems are config errors, reported elsewhere)."""
    value = env.get(ENV)
    return parse(str(value))[0] if value is not None else []


def missing_files(adapter: Adapter, files: set[str]) -> list[str]:
    """Files an adapter directory lacks, given the volume's file list (paths relative to its root)."""
    missing = [] if f"{adapter.path}/{CONFIG_FILE}" in files else [CONFIG_FILE]
    if not any(f"{adapter.path}/{w}" in files for w in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    return missing
