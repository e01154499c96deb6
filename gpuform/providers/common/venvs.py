"""Virtualenvs on SSH hosts, built from uploaded wheels (hosts may not reach a package index)."""

from __future__ import annotations

import hashlib
import json
import posixpath
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpuform.providers.common import wheels
from gpuform.providers.common.shell import Shell as Connection

WORKER_REQUIREMENTS = ["aiohttp>=3.9"]
REQUIREMENTS_FILE = ".gpuform-requirements"  # in an environment's root: the requirements it was built with
STAMP_FILE = ".gpuform-stamp"  # ... and the wheelhouse it was installed from (written last)
Progress = Callable[[str], None]
BASE_PROBE = ("import json, platform, sys, sysconfig; v = platform.libc_ver()[1] or '2.17'; p = sysconfig.get_paths(); "
              "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'machine': platform.machine(), "
              "'glibc': [int(x) for x in v.split('.')[:2]], 'venv': sys.prefix != sys.base_prefix, "
              "'site': sorted({p['purelib'], p['platlib']})}))")  # Platform.PROBE, plus the environment's site
SITE = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def _quiet(message: str) -> None:
    return None


def platform_of(conn: Connection, python: str) -> wheels.Platform:
    return wheels.Platform.parse(conn.run([python, "-c", wheels.Platform.PROBE]).text)


def upload_wheelhouse(conn: Connection, local: Path, data_dir: str) -> str:
    """Copy the wheelhouse to the host (files already there with the same size are skipped)."""
    remote = posixpath.join(data_dir, "wheelhouse", local.name)
    conn.run(["mkdir", "-p", remote])
    present = {}
    for line in conn.run(["find", remote, "-maxdepth", "1", "-type", "f", "-printf", "%f\t%s\n"]).text.splitlines():
        name, size = line.split("\t")
        present[name] = int(size)
    for wheel in sorted(local.glob("*.whl")):
        if present.get(wheel.name) != wheel.stat().st_size:
            # a name of its own per upload: applies in parallel (two endpoints, two configurations) share the
            # wheelhouse; each renames its complete copy into place, and the copies are identical
            part = posixpath.join(remote, f".{wheel.name}.{uuid.uuid4().hex[:8]}.part")
            conn.put(wheel, part)
            conn.rename(part, posixpath.join(remote, wheel.name))
    return remote


def ensure(conn: Connection, python: str, venv: str | None, data_dir: str, shared_dir: str, cache: Path, name: str,
           requirements: list[str], with_deps: bool, progress: Progress = _quiet) -> str:
    """A Python on the host that can import gpuform (and ``requirements``); returns its interpreter path.

    ``venv`` None: a virtualenv ``DATA_DIR/venvs/NAME`` made from ``python``. Otherwise ``venv`` names an
    existing environment (or interpreter) to install into. ``with_deps`` installs all of gpuform's
    dependencies (the gateway); otherwise gpuform alone plus the worker SDK's (workers).
    """
    platform = platform_of(conn, python)
    interpreter = _interpreter(conn, venv) if venv else posixpath.join(data_dir, "venvs", name, "bin", "python")
    return _install(conn, Target(python, interpreter, venv is None), platform, shared_dir, cache,
                    sorted(set(requirements + (wheels.gpuform_requirements() if with_deps else WORKER_REQUIREMENTS))),
                    progress)


@dataclass(frozen=True)
class Target:
    """Where packages go: ``interpreter`` (a virtualenv made from ``base`` first when ``create``)."""

    base: str
    interpreter: str
    create: bool
    layer: tuple[str, ...] = ()  # site-packages of the base environment, seen from the new one

    @property
    def root(self) -> str:
        return posixpath.dirname(posixpath.dirname(self.interpreter))


def worker_env(conn: Connection, base: str, data_dir: str, shared_dir: str, cache: Path, requirements: list[str],
               progress: Progress = _quiet) -> str:
    """The interpreter of ``DATA_DIR/venvs/env-KEY``: a virtualenv with gpuform's worker SDK and
    ``requirements``, KEY a hash of the requirements, the host's Python (version, platform) and ``base``.
    Built once and reused by every apply (and every endpoint) that asks for the same; when ``base`` runs in
    a virtualenv, the new one sees that environment's packages too (below its own)."""
    text = conn.run([base, "-c", BASE_PROBE]).text
    probe, platform = json.loads(text), wheels.Platform.parse(text)
    reqs = worker_requirements(requirements)
    layer = tuple(probe["site"]) if probe["venv"] else ()
    key = hashlib.sha256(json.dumps([platform.tag, reqs, list(layer)]).encode()).hexdigest()[:16]
    interpreter = posixpath.join(data_dir, "venvs", f"env-{key}", "bin", "python")
    with _lock(interpreter):
        _install(conn, Target(base, interpreter, True, layer), platform, shared_dir, cache, reqs, progress)
    return interpreter


def worker_requirements(requirements: list[str]) -> list[str]:
    """What a worker environment with ``requirements`` holds besides gpuform (sorted, once each)."""
    return sorted(set(requirements + WORKER_REQUIREMENTS))


def built_with(root: str) -> list[str] | None:
    """The requirements the worker environment at ``root`` (on this machine) was built with; None if none was."""
    try:
        return parse_built(Path(root, REQUIREMENTS_FILE).read_text())
    except OSError:
        return None


def parse_built(text: str) -> list[str] | None:
    """The requirements an environment's ``.gpuform-requirements`` records (None when it is not a list)."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return [str(r) for r in found] if isinstance(found, list) else None


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: str) -> threading.Lock:
    """One build of an environment at a time (endpoints that share it are applied in parallel)."""
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _install(conn: Connection, target: Target, platform: wheels.Platform, shared_dir: str, cache: Path,
             reqs: list[str], progress: Progress) -> str:
    stamp_path = posixpath.join(target.root, STAMP_FILE)
    started = time.monotonic()
    house = wheels.build(cache, platform, reqs, lambda: progress(f"preparing wheels for {platform.tag}: "
                                                                 f"{', '.join(reqs)}"))
    stamp = hashlib.sha256(f"{house.name}".encode()).hexdigest()[:16]
    built = posixpath.join(target.root, REQUIREMENTS_FILE)  # what refresh compares (read_endpoint)
    if conn.run(["cat", stamp_path], check=False).text.strip() == stamp:
        conn.write_file(built, json.dumps(reqs).encode())  # an environment an earlier gpuform built has none
        return target.interpreter
    remote_house = upload_wheelhouse(conn, house, shared_dir)
    if target.create:
        progress(f"creating the virtualenv {target.root}")
        conn.run([target.base, "-m", "venv", target.root])
        if target.layer:
            site = conn.run([target.interpreter, "-c", SITE]).text.strip()
            conn.write_file(posixpath.join(site, "gpuform-base.pth"), "".join(f"{p}\n" for p in target.layer).encode())
    progress(f"installing gpuform and {len(reqs)} requirement(s) into {target.root}")
    gpuform_wheel = next(p.name for p in house.glob("gpuform-*.whl"))
    install = [target.interpreter, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
               "--find-links", remote_house, "--upgrade"]
    conn.run([*install, "--no-deps", "--force-reinstall", posixpath.join(remote_house, gpuform_wheel)], timeout=900)
    conn.run([*install, *reqs], timeout=900)
    conn.write_file(built, json.dumps(reqs).encode())
    conn.write_file(stamp_path, stamp.encode())
    progress(f"{target.root} ready ({time.monotonic() - started:.1f} s)")
    return target.interpreter


def _interpreter(conn: Connection, venv: str) -> str:
    candidate = posixpath.join(venv, "bin", "python")
    if conn.run(["test", "-x", candidate], check=False).code == 0:
        return candidate
    return venv
