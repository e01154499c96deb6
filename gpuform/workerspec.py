"""The catalogue of worker templates, and how an endpoint's template becomes a command line (every provider)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Template:
    """One ``worker.template``: what it runs and what it needs."""

    name: str
    module: str | None  # run as ``python -m MODULE``; None: the endpoint's own command or image
    description: str
    needs: str  # in words, for `gpuform templates` and docs/workers.md
    packages: tuple[str, ...] = ()  # what the worker's Python must have besides gpuform[worker]
    needs_model: bool = False  # the endpoint must declare `model:`
    needs_volume: bool = False  # ... with a volume (the worker loads the model from it)
    examples: tuple[str, ...] = ()  # directories under examples/


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("custom", None, "Your handler: `command:` (local and bare-metal pools) or `image:` (docker pools).",
             "worker.command (its packages: worker.requirements or a requirements.txt beside the handler) or "
             "worker.image (packages built in)"),
    Template("echo", "gpuform.workers.echo", "Returns its input (streams, sleeps or fails when asked); for trying "
             "things and tests.", "nothing", examples=("quickstart",)),
    Template("vllm", "gpuform.workers.vllm", "The official vLLM OpenAI server (chat, completions, LoRA adapters) "
             "with the model from a volume.", "model: {name, volume}; vllm in worker.python (or the image)",
             ("vllm",), True, examples=("vllm-tiny", "vllm-lora")),
    Template("embeddings", "gpuform.workers.embeddings", "Text embeddings with a transformers encoder from a "
             "volume; OpenAI /v1/embeddings (float or base64).", "model: {name, volume}; torch and transformers "
             "in worker.python (or the image)", ("torch", "transformers"), True, True, ("embeddings",)),
    Template("pytorch", "gpuform.workers.pytorch", "A plain PyTorch model (TorchScript .pt or torch.export .pt2) from "
             "a volume: tensors in, tensors out as nested lists.", "model: {name, volume} holding model.pt (or "
             "MODEL_FILE); torch in worker.python (or the image)", ("torch",), True, True, ("pytorch",)),
)}
TEMPLATE_MODULES = {t.name: t.module for t in TEMPLATES.values() if t.module}
PYTHON_NAMES = ("python", "python3")
VOLUME_MOUNT = "/runpod-volume"
VLLM_CONCURRENCY = 30  # requests one vllm worker takes at once when MAX_CONCURRENCY does not say


def template_argv(template: str, command: list[str] | None) -> list[str]:
    """The worker's argv with ``python`` as a placeholder for the interpreter."""
    if template in TEMPLATE_MODULES and not command:
        return ["python", "-m", TEMPLATE_MODULES[template]]
    return list(command or [])


def interpreter(python: str | None, default: str = sys.executable) -> str:
    """``python`` may name an interpreter or a virtualenv directory; default: the running interpreter."""
    if not python:
        return default
    if os.path.isdir(python):
        return str(Path(python) / "bin" / "python")
    return python


def handler_file(command: list[str] | None) -> str | None:
    """The handler script of ``[python, ..., handler.py, ...]`` (None for ``-m module``, ``-c`` or another
    program): the first argument after the interpreter's options."""
    if not command or not os.path.basename(command[0]).startswith("python"):
        return None
    for arg in command[1:]:
        if arg in ("-m", "-c"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def requirement_lines(text: str) -> list[tuple[int, str]]:
    """The requirements of a requirements.txt with their line numbers (comments and blank lines left out)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split(" #")[0].strip()
        if stripped and not stripped.startswith("#"):
            out.append((number, stripped))
    return out


def resolve_argv(argv: list[str], python: str) -> list[str]:
    if argv and argv[0] in PYTHON_NAMES:
        return [python, *argv[1:]]
    return argv


def jobs_per_worker(template: str, concurrency: int | None, env: Mapping[str, object]) -> int:
    """Jobs one worker runs at once: ``worker.concurrency`` when set (the gateway enforces it), else what the
    worker takes by itself (the vllm template: ``MAX_CONCURRENCY``; gpuform's SDK by default: 1)."""
    if concurrency is not None:
        return concurrency
    if template == "vllm":
        try:
            return int(str(env.get("MAX_CONCURRENCY", VLLM_CONCURRENCY)))
        except ValueError:
            return VLLM_CONCURRENCY
    return 1
