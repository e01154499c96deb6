"""A bare-metal worker's own files, on its hosts: the handler and the requirements.txt beside it (gpuform
copies neither: they are where ``worker.workdir`` says on every host), and what the endpoint's environment
was built with. One probe per host reads them all; the rest is pure (what the hosts' files mean together)."""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

from gpuform.errors import ProviderError
from gpuform.provider import Observation
from gpuform.providers.common import venvs
from gpuform.providers.common.shell import Shell
from gpuform.workerspec import handler_file, requirement_lines

# run by the pool's Python on each host: {"exists": {key: path}, "read": {key: path}} on stdin -> whether each
# "exists" path is there, and the text of each "read" path (null when it is not a readable file)
PROBE = """
import json, os, sys
q = json.load(sys.stdin)
def text(p):
    try:
        with open(p, errors="replace") as f:
            return f.read(1 << 20)
    except OSError:
        return None
print(json.dumps({"exists": {k: os.path.exists(p) for k, p in q["exists"].items()},
                  "read": {k: text(p) for k, p in q["read"].items()}}))
"""


@dataclass(frozen=True)
class Paths:
    """Where a worker's files are on its hosts (None: the command names no handler script)."""

    handler: str | None
    requirements: str | None


@dataclass(frozen=True)
class HostFiles:
    """What one host has: the environment (its stamp, what it was built with), the handler, requirements.txt."""

    ready: bool
    built: list[str] | None
    handler: bool
    requirements: str | None
    python: bool = True  # worker.python exists (True when there is none)


def paths(command: list[str] | None, workdir: str | None, default_dir: str) -> Paths:
    """The handler of ``command: [python, handler.py]`` and the requirements.txt beside it, resolved as the
    worker's process resolves them: from ``worker.workdir``, else ``default_dir`` (where workers start)."""
    handler = handler_file(command)
    if handler is None:
        return Paths(None, None)
    found = posixpath.join(workdir or default_dir, handler)
    return Paths(found, posixpath.join(posixpath.dirname(found), "requirements.txt"))


def look(conn: Shell, python: str, env_root: str, where: Paths, worker_python: str | None) -> HostFiles:
    """One host's files, in one command run by the pool's ``python``."""
    exists = {"stamp": posixpath.join(env_root, venvs.STAMP_FILE), "handler": where.handler, "python": worker_python}
    read = {"built": posixpath.join(env_root, venvs.REQUIREMENTS_FILE), "requirements": where.requirements}
    query = {"exists": {k: p for k, p in exists.items() if p}, "read": {k: p for k, p in read.items() if p}}
    found = json.loads(conn.run([python, "-c", PROBE], stdin=json.dumps(query).encode()).text)
    there, text = found["exists"], found["read"]
    built = venvs.parse_built(text["built"]) if text["built"] is not None else None
    return HostFiles(there["stamp"], built, there.get("handler", True), text.get("requirements"),
                     there.get("python", True))


def host_requirements(endpoint: str, path: str | None, texts: dict[str, str | None]) -> list[str]:
    """The requirements of the requirements.txt at ``path`` on the hosts (``texts``: its text per host, None
    where there is none). Raises ProviderError when a line is a pip option, or when the hosts' files list
    different requirements (a missing file lists none)."""
    per_host = {host: _lines(endpoint, path, host, text) for host, text in sorted(texts.items())}
    groups: dict[tuple[str, ...], list[str]] = {}
    for host, lines in per_host.items():
        groups.setdefault(tuple(lines), []).append(host)
    if len(groups) > 1:
        found = "; ".join(f"{', '.join(hosts)}: {', '.join(lines) or 'none'}" for lines, hosts in groups.items())
        raise ProviderError(f"endpoint {endpoint}: {path} lists different requirements on different hosts ({found})",
                            "Make that file the same on every host of the pool (copy it from one to the others), "
                            "then apply again.", f"endpoint.{endpoint}")
    return list(next(iter(groups), ()))


def _lines(endpoint: str, path: str | None, host: str, text: str | None) -> list[str]:
    lines = requirement_lines(text or "")
    options = [(n, line) for n, line in lines if line.startswith("-")]
    if options:
        number, line = options[0]
        raise ProviderError(f"endpoint {endpoint}: {path}:{number} on {host}: pip options are not supported in a "
                            f"worker's requirements.txt ({line})", "List one requirement per line there (an index "
                            "goes in PIP_INDEX_URL or pip's configuration on the machine running gpuform, which "
                            "prepares the wheels).", f"endpoint.{endpoint}")
    return [line for _, line in lines]


def observe(endpoint: str, requirements: list[str], where: Paths, python: str | None,
            found: dict[str, HostFiles]) -> Observation:
    """What refresh reports: the hosts whose environment is ready; notes for what apply would refuse (a
    ``worker.python`` or handler missing on a host, requirements.txt with options or differing between hosts);
    a repair for each host whose environment is missing or was built with other requirements."""
    notes, wanted, extra = _notes(endpoint, where, python, found), None, []
    try:
        extra = host_requirements(endpoint, where.requirements, {h: f.requirements for h, f in found.items()})
        wanted = venvs.worker_requirements([*requirements, *extra])
    except ProviderError as exc:
        notes.append(f"{exc.message.removeprefix(f'endpoint {endpoint}: ')}: apply fails until it is fixed")
    missing = sorted(h for h, f in found.items() if not f.ready)
    # an environment an earlier gpuform built records nothing: stale only when requirements.txt adds lines
    stale = sorted(h for h, f in found.items() if f.ready and wanted is not None
                   and (f.built != wanted if f.built is not None else bool(extra)))
    repair = [f"worker environment missing on {', '.join(missing)}"] if missing else []
    repair += [f"worker environment out of date on {', '.join(stale)} (its requirements changed)"] if stale else []
    return Observation({"hosts_ready": sorted(h for h in found if h not in missing)}, notes=notes, repair=repair)


def _notes(endpoint: str, where: Paths, python: str | None, found: dict[str, HostFiles]) -> list[str]:
    gone = sorted(h for h, f in found.items() if not f.python)
    lost = sorted(h for h, f in found.items() if not f.handler)
    notes = [f"worker.python {python} does not exist on {', '.join(gone)}: create it there (apply fails "
             "until it exists), or leave `python` out"] if gone else []
    return notes + ([f"the handler {where.handler} does not exist on {', '.join(lost)}: put it there (gpuform "
                     "does not copy it; apply fails until it exists), or fix worker.command or worker.workdir"]
                    if lost else [])


def missing_handler(endpoint: str, path: str, hosts: list[str]) -> ProviderError:
    """The error of an apply whose handler is not on ``hosts``."""
    return ProviderError(f"endpoint {endpoint}: the handler {path} does not exist on {', '.join(hosts)}",
                         "Put it there (gpuform does not copy a bare-metal worker's files: the handler and its "
                         "requirements.txt live on every host of the pool), or fix worker.command or "
                         "worker.workdir.", f"endpoint.{endpoint}")


def environment(requirements: list[str]) -> str:
    """The endpoint's ``environment`` (a new one rolls its workers): a hash of what its virtualenv holds."""
    return "reqs-" + hashlib.sha256(json.dumps(venvs.worker_requirements(requirements)).encode()).hexdigest()[:16]
