"""Fault injection for crash tests: kill the process at a numbered point of an operation.

``GPUFORM_FAULT_TRACE=FILE`` appends the name of every point reached to FILE (one per line);
``GPUFORM_FAULT_KILL_AT=N`` sends SIGKILL to this process when the N-th point (1-based) is reached, and
``GPUFORM_FAULT_KILL_AT=NAME:N`` when the N-th point named NAME is (``volume.placed:5``: once five files
of a volume staging are verified); ``GPUFORM_FAULT_SIGNAL=INT`` sends SIGINT instead (a Ctrl-C right there;
the point then waits 0.5 s so that the handler has run before the thread that reached it goes on).
Apply calls :func:`point` before and after every provider call and every state write, so a test can run an
apply once to count the points and then kill it at each one in turn.
"""

from __future__ import annotations

import contextvars
import os
import signal
import threading
import time
from collections import Counter

_lock = threading.Lock()
_count = 0
_named: Counter[str] = Counter()
address: contextvars.ContextVar[str] = contextvars.ContextVar("gpuform_fault_address", default="")


def point(name: str) -> None:
    """Mark a fault point; a no-op unless the fault environment variables are set."""
    trace = os.environ.get("GPUFORM_FAULT_TRACE")
    kill_at = os.environ.get("GPUFORM_FAULT_KILL_AT")
    if not trace and not kill_at:
        return
    global _count
    with _lock:
        _count += 1
        _named[name] += 1
        if trace:
            with open(trace, "a", encoding="utf-8") as fh:
                fh.write(f"{_count} {name} {address.get()}".rstrip() + "\n")
        if kill_at and _reached(kill_at, name):
            interrupt = os.environ.get("GPUFORM_FAULT_SIGNAL", "").upper() == "INT"
            os.kill(os.getpid(), signal.SIGINT if interrupt else signal.SIGKILL)
            if interrupt:
                time.sleep(0.5)  # the main thread handles the signal before this thread goes on, as at a real Ctrl-C


def _reached(kill_at: str, name: str) -> bool:
    wanted, _, nth = kill_at.rpartition(":")
    if wanted:
        return wanted == name and int(nth) == _named[name]
    return int(kill_at) == _count
