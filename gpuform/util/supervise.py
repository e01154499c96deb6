"""A small process supervisor: ``python -m gpuform.util.supervise --pidfile P [--label K=V]... -- CMD...``.

It runs CMD, restarts it when it exits (back-off 1 s doubling to 30 s, reset after a minute of uptime),
records ``{"pid", "child", "started"}`` in the pid file, and on SIGTERM forwards the signal, waits up to
``--grace`` seconds for the child and exits. Labels only mark the command line so the process can be
found again (adopted) after an interrupted apply. ``--log-format json`` writes its own lines (a restart) as
JSON objects, like the gateway's with ``log_format: json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from gpuform.util.procs import start_time


class Supervisor:
    def __init__(self, command: list[str], pidfile: Path, grace: float, log_format: str = "text") -> None:
        self.command = command
        self.pidfile = pidfile
        self.grace = grace
        self.log_format = log_format
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    def _write_pidfile(self) -> None:
        data = {"pid": os.getpid(), "started": start_time(os.getpid()),
                "child": self.child.pid if self.child else None, "command": self.command}
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.pidfile)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.child and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        backoff = 1.0
        while not self.stopping:
            began = time.monotonic()
            self.child = subprocess.Popen(self.command)
            self._write_pidfile()
            code = self._wait_child()
            if self.stopping:
                break
            backoff = 1.0 if time.monotonic() - began > 60 else min(backoff * 2, 30.0)
            self._say(f"child exited with {code}; restarting in {backoff:.0f}s")
            self._sleep(backoff)
        return 0

    def _say(self, message: str) -> None:
        if self.log_format == "json":
            now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            line = json.dumps({"time": now, "level": "WARNING", "logger": "gpuform.supervise", "message": message})
        else:
            line = f"supervise: {message}"
        print(line, file=sys.stderr, flush=True)

    def _wait_child(self) -> int:
        assert self.child is not None
        deadline: float | None = None
        while True:
            try:
                return self.child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self.stopping and deadline is None:
                    deadline = time.monotonic() + self.grace
                if deadline is not None and time.monotonic() > deadline:
                    self.child.kill()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuform.util.supervise")
    parser.add_argument("--pidfile", required=True, type=Path)
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    return Supervisor(command, args.pidfile, args.grace, args.log_format).run()


if __name__ == "__main__":
    raise SystemExit(main())
