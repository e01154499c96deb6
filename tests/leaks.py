"""What a test run leaves behind: gpuform processes and worker containers started during the run that are
still there at its end. Every test destroys what it applies, so anything found is a leak (a bug in gpuform or
in a test), reported as a test error."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

HOSTS_JSON = Path("/var/lib/gpuform-test/hosts.json")
_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def gpuform_processes(since: float) -> dict[int, str]:
    """Python processes running gpuform code that started after ``since`` (epoch seconds)."""
    boot, mine = _boot_time(), _ancestors()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        if "python" not in command or "gpuform" not in command or "pytest" in command:
            continue
        started = boot + int(stat.rsplit(")", 1)[1].split()[19]) / _TICKS
        if started >= since:
            found[int(entry.name)] = command[:300]
    return found


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return pids


def worker_containers(since: float) -> dict[str, str]:
    """gpuform-labelled containers on this machine's dockerd and the test hosts' created after ``since``."""
    try:
        import docker
    except ImportError:
        return {}
    sockets = ["unix:///var/run/docker.sock"]
    if HOSTS_JSON.exists():
        sockets += [h["docker_host"] for h in json.loads(HOSTS_JSON.read_text())["hosts"]]
    found: dict[str, str] = {}
    for url in sockets:
        try:
            client = docker.DockerClient(base_url=url, timeout=10)
            containers = client.containers.list(all=True, filters={"label": "gpuform.lineage"})
        except Exception:  # an engine that is not running holds nothing
            continue
        for c in containers:
            created = c.attrs.get("Created", "")
            if _epoch(created) >= since:
                found[f"{url} {c.name}"] = f"{c.status} {c.labels.get('gpuform.address', '')} created {created}"
                c.remove(force=True)
    return found


def _epoch(stamp: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return 0.0


def check(since: float, grace: float = 15.0) -> str:
    """A report of what is left (empty when nothing is); leftovers are killed or removed."""
    deadline = time.monotonic() + grace
    while (procs := gpuform_processes(since)) and time.monotonic() < deadline:
        time.sleep(0.5)  # processes a destroy just stopped may take a moment to exit
    for pid in procs:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    containers = worker_containers(since)
    lines = [f"process {pid}: {cmd}" for pid, cmd in procs.items()]
    lines += [f"container {name}: {what}" for name, what in containers.items()]
    return "\n".join(lines)
