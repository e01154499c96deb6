"""How an endpoint's worker template becomes a command line, shared by every provider."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

TEMPLATE_MODULES = {"echo": "gpuform.workers.echo", "vllm": "gpuform.workers.vllm"}
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
