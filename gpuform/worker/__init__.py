"""gpuform's worker SDK: write a handler, call :func:`start`.

    from gpuform.worker import start, progress_update, JobError

    def handler(job):                 # sync, async, or returning a (async) generator to stream
        progress_update(job, {"step": 1})
        if not job["input"].get("prompt"):
            raise JobError("prompt is required", error_type="BadInput")
        return {"text": job["input"]["prompt"].upper()}

    start(handler, concurrency=4)

A handler's return value is the job's output; a dict with a truthy ``error`` fails the job (RunPod's
convention); a raised exception fails it with its type, message and traceback. Generators stream each
item (``/stream`` and SSE) and the job's output is the list of items (``aggregate_stream=False``: ``[]``).
Sync handlers run in a thread; async ones on the event loop, where cancel and execution timeouts reach
them as ``asyncio.CancelledError``. SIGTERM stops taking jobs and lets running ones finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from gpuform.util.phase import report_phase_now
from gpuform.worker.runner import Handler, JobError, Settings, Worker

__all__ = ["JobError", "progress_update", "report_phase", "report_phase_now", "start"]

_current: Worker | None = None
Control = Callable[[str], Awaitable[None]]


def start(handler: Handler, concurrency: int | None = None, aggregate_stream: bool = True,
          control: Control | None = None) -> None:
    """Run the worker until SIGTERM (then drain) — the process's main loop. ``control`` receives the
    gateway's ``sleep``/``wake`` commands (vLLM sleep mode)."""
    global _current
    logging.basicConfig(level=os.environ.get("GPUFORM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _current = Worker(handler, Settings.from_env(concurrency, aggregate_stream))
    _current.control = control
    asyncio.run(_current.run())
    if _current.exit_code:
        raise SystemExit(_current.exit_code)


def progress_update(job: dict[str, Any], progress: Any) -> None:
    """Report progress for a running job; ``/status`` shows it as the job's output while IN_PROGRESS."""
    if _current is not None:
        _current.progress(job, progress)


def report_phase(phase: str) -> None:
    """Tell the gateway a start-up phase was reached (shown in the cold-start timeline)."""
    if _current is not None and _current.loop is not None:
        asyncio.run_coroutine_threadsafe(_current.report(phase), _current.loop)
