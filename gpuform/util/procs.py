"""Local process helpers: liveness that survives pid reuse, finding processes by label, stopping them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields and fields[0] == "Z":
        return None  # a zombie has exited
    return int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs and, when ``started`` is given, is the same process (not a reused pid)."""
    st = start_time(pid)
    return st is not None and (started is None or st == started)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def find_by_labels(labels: dict[str, str]) -> Iterator[int]:
    """Pids whose command line carries every ``--label KEY=VALUE`` in ``labels``."""
    wanted = {f"{k}={v}" for k, v in labels.items()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = cmdline(int(entry))
        found = {args[i + 1] for i, a in enumerate(args[:-1]) if a == "--label"}
        if wanted <= found and alive(int(entry)):
            yield int(entry)


def find_by_environ(variables: dict[str, str]) -> Iterator[int]:
    """Pids whose environment holds every ``KEY=VALUE`` in ``variables`` (processes of this user, or any as
    root; others' environments are unreadable and skipped)."""
    wanted = {f"{k}={v}".encode() for k, v in variables.items()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= environ and alive(int(entry)):
            yield int(entry)


def terminate(pid: int, grace: float, group: bool = False) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Never raises for a process already gone."""
    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.05)
    send(signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.02)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 50) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist), continued from its last rotated
    file (``PATH.1``, see :mod:`gpuform.util.logpipe`) when the current one was just started."""
    found = _tail_lines(path)
    if len(found) < lines:
        found = _tail_lines(path.with_name(path.name + ".1")) + found
    return "\n".join(found[-lines:])


def _tail_lines(path: Path) -> list[str]:
    """The lines of the last 64 KiB of ``path`` ([] when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()
