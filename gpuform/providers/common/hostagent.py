"""A small agent run on bare-metal hosts over SSH: ``python3 hostagent.py COMMAND`` with a JSON request on
stdin and a JSON reply on stdout. Standard library only: it runs on the host's own Python, before any
virtualenv exists.

Commands: ``start`` (a detached process with a pid record and a log), ``stop``, ``list``, ``tail``, ``forget``
(drop a record, keep the log), ``info`` (Python, platform, systemd, disk).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _start_time(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


ALLOWED = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "SSL_CERT_FILE",
           "SSL_CERT_DIR", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "XDG_RUNTIME_DIR"}


def _allowed(env: Any) -> dict[str, str]:
    """The host's environment reduced to an allowlist (as gpuform.util.environ does on the operator's side)."""
    return {k: v for k, v in env.items() if k in ALLOWED or k.startswith(("LC_", "CUDA_"))}


def _log_pipe(log: Path, rotate: dict[str, Any]) -> subprocess.Popen[bytes]:
    """logpipe.py (beside this file) writing into ``log``, rotated at ``max_bytes`` with ``keep`` old files."""
    pipe = Path(__file__).resolve().parent / "logpipe.py"
    return subprocess.Popen([sys.executable, str(pipe), str(log), str(int(rotate["max_bytes"])),
                             str(int(rotate["keep"]))], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def start(req: dict[str, Any]) -> dict[str, Any]:
    """Start a detached process; its output goes to ``log``, through a rotating log pipe when ``rotate``
    ({max_bytes, keep}) is given."""
    records = Path(req["records"])
    records.mkdir(parents=True, exist_ok=True)
    log = Path(req["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**_allowed(os.environ), **req.get("env", {})}
    out = _log_pipe(log, req["rotate"]).stdin if req.get("rotate") else open(log, "ab")  # noqa: SIM115
    assert out is not None
    try:
        proc = subprocess.Popen(req["argv"], cwd=req.get("cwd") or None, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    finally:
        out.close()  # the process holds its own copy; a log pipe ends when the process (and its children) do
    record = {"id": req["id"], "pid": proc.pid, "started": _start_time(proc.pid), "started_at": time.time(),
              "log": str(log), **req.get("meta", {})}
    tmp = records / f".{req['id']}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(records / f"{req['id']}.json")
    return record


def _record(records: Path, ident: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((records / f"{ident}.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def _alive(record: dict[str, Any]) -> bool:
    st = _start_time(int(record["pid"]))
    return st is not None and (record.get("started") is None or st == record["started"])


def stop(req: dict[str, Any]) -> dict[str, Any]:
    records = Path(req["records"])
    record = _record(records, req["id"])
    if record is None or not _alive(record):
        return {"stopped": False}
    pid = int(record["pid"])
    for sig, wait in ((signal.SIGTERM, float(req.get("grace", 30))), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(record):
            time.sleep(0.05)
        if not _alive(record):
            break
    record["stopped"] = True
    (records / f"{req['id']}.json").write_text(json.dumps(record))
    return {"stopped": True}


def list_(req: dict[str, Any]) -> dict[str, Any]:
    records = Path(req["records"])
    out = []
    for path in sorted(records.glob("*.json")) if records.exists() else []:
        record = _record(records, path.stem)
        if record is None:
            continue
        if any(record.get(k) != v for k, v in (req.get("match") or {}).items()):
            continue
        record["alive"] = _alive(record)
        out.append(record)
    return {"records": out}


def _tail_lines(path: str) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            data = fh.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()


def tail(req: dict[str, Any]) -> dict[str, Any]:
    """The last lines of a log, continued from its last rotated file (PATH.1) when the current one is short."""
    lines = int(req.get("lines", 50))
    found = _tail_lines(req["path"])
    if len(found) < lines:
        found = _tail_lines(req["path"] + ".1") + found
    return {"text": "\n".join(found[-lines:])}


def forget(req: dict[str, Any]) -> dict[str, Any]:
    try:
        (Path(req["records"]) / f"{req['id']}.json").unlink()
    except FileNotFoundError:
        return {"forgotten": False}
    return {"forgotten": True}


def info(req: dict[str, Any]) -> dict[str, Any]:
    data_dir = Path(req.get("data_dir", "/"))
    probe = data_dir if data_dir.exists() else Path("/")
    usage = shutil.disk_usage(probe)
    return {"python": "{}.{}".format(*sys.version_info[:2]), "machine": platform.machine(),
            "systemd": Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None,
            "disk_free": usage.free, "disk_total": usage.total, "hostname": platform.node()}


COMMANDS = {"start": start, "stop": stop, "list": list_, "tail": tail, "forget": forget, "info": info}


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in COMMANDS:
        print(json.dumps({"error": f"unknown command {command!r}; one of {sorted(COMMANDS)}"}))
        return 2
    request = json.loads(sys.stdin.read() or "{}")
    print(json.dumps(COMMANDS[command](request)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
