"""What a test run leaves behind: gpuform processes and containers of this run (named by its temporary
directory or by the lineages of the states it made) still there at its end. Every test destroys what it
applies, so anything found is a leak (a bug in gpuform or in a test), reported as a test error."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

HOSTS_JSON = Path("/var/lib/gpuform-test/hosts.json")


def lineages_under(base: Path) -> set[str]:
    """The lineages of every state a test made below ``base`` (the session's temporary directory)."""
    found: set[str] = set()
    for path in [*base.rglob("gpuform.state.json"), *base.rglob("gpuform.state.json.backup")]:
        with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
            found.add(str(json.loads(path.read_text())["lineage"]))
    return {x for x in found if len(x) >= 8}  # an empty one (a test's bogus state) would match every process


def gpuform_processes(base: Path, marks: set[str]) -> dict[int, str]:
    """Python processes running gpuform code that run in ``base`` (local workers start in their
    configuration's directory) or whose command line names one of ``marks`` (``base``, a lineage or its
    short form in host paths)."""
    mine = _ancestors()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        if "python" not in command or "gpuform" not in command:
            continue
        cwd = ""
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
        if cwd.startswith(str(base)) or any(m in command for m in marks):
            found[int(entry.name)] = f"{command[:300]} (in {cwd})"
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


def worker_containers(lineages: set[str]) -> dict[str, str]:
    """Containers labelled with one of ``lineages`` on this machine's dockerd and the test hosts'."""
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
            if c.labels.get("gpuform.lineage") in lineages:
                found[f"{url} {c.name}"] = f"{c.status} {c.labels.get('gpuform.address', '')}"
                c.remove(force=True)
    return found


def check(base: Path, grace: float = 15.0) -> str:
    """What this test run (temporary directory ``base``) left behind, as a report (empty when nothing);
    leftovers are killed or removed. Other runs' processes and containers are not touched."""
    lineages = lineages_under(base)
    marks = {str(base), *lineages, *(f"lineage-{x[:8]}" for x in lineages)}
    deadline = time.monotonic() + grace
    while (procs := gpuform_processes(base, marks)) and time.monotonic() < deadline:
        time.sleep(0.5)  # processes a destroy just stopped may take a moment to exit
    for pid in procs:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    containers = worker_containers(lineages)
    lines = [f"process {pid}: {cmd}" for pid, cmd in procs.items()]
    lines += [f"container {name}: {what}" for name, what in containers.items()]
    return "\n".join(lines)
