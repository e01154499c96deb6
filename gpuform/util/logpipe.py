"""Size-rotated logs for processes that write to stdout: ``python3 logpipe.py PATH MAX_BYTES KEEP`` copies its
standard input to PATH; when PATH would pass MAX_BYTES it becomes PATH.1 (PATH.1 becomes PATH.2 …, at most
KEEP rotated files) and a new PATH is started. It cuts at a line end where the data allows, ignores SIGTERM,
SIGINT and SIGHUP (the process it serves may be stopped with its whole group; the last lines still arrive)
and exits when every writer has closed the pipe.

Standard library only: bare-metal hosts run it with their own Python next to ``hostagent.py``, before any
virtualenv exists. :func:`spawn` starts a process with its output through one (the local provider's use).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

CHUNK = 65536


def rotate(path: Path, keep: int) -> None:
    """PATH -> PATH.1, PATH.1 -> PATH.2, …; the oldest beyond ``keep`` is dropped."""
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i + 1}"))
    if path.exists():
        path.replace(path.with_name(f"{path.name}.1"))


class RotatingFile:
    """``path`` opened for appending, rotated before it would pass ``max_bytes`` (at a line end where one
    fits; a single line longer than a whole file is split)."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max(1, max_bytes), keep
        self.out = open(path, "ab", buffering=0)  # noqa: SIM115 (reopened at each rotation)
        self.size = self.out.tell()

    def write(self, data: bytes) -> None:
        while data:
            room = self.max_bytes - self.size
            if len(data) <= room:
                self.out.write(data)
                self.size += len(data)
                return
            cut = data.rfind(b"\n", 0, max(0, room)) + 1
            if not cut and self.size:
                self.rotate()
                continue
            cut = cut or room
            self.out.write(data[:cut])
            data = data[cut:]
            self.rotate()

    def rotate(self) -> None:
        self.out.close()
        rotate(self.path, self.keep)
        self.out = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        self.out.close()


def copy(source: int, path: Path, max_bytes: int, keep: int) -> None:
    """Copy ``source`` (a file descriptor) to ``path`` until end of file, rotating by size."""
    target = RotatingFile(path, max_bytes, keep)
    try:
        while chunk := os.read(source, CHUNK):
            target.write(chunk)
    finally:
        target.close()


def spawn(argv: list[str], log: Path, max_bytes: int, keep: int, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr through a log pipe into ``log`` (both in new sessions, so a
    signal to the process's group leaves the pipe to drain its last lines). Returns the process."""
    pipe = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(log), str(max_bytes), str(keep)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    assert pipe.stdin is not None
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=pipe.stdin, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, **popen)
    except BaseException:
        pipe.kill()
        raise
    finally:
        pipe.stdin.close()  # the child holds the write end now; the pipe ends when it (and its children) do


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: logpipe.py PATH MAX_BYTES KEEP", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    path = Path(argv[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    copy(sys.stdin.fileno(), path, int(argv[1]), int(argv[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
