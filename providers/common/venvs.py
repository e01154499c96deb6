"""Virtualenvs on SSH hosts, built from uploaded wheels (hosts may not reach a package index)."""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from pathlib import Path

from gpuform.providers.common import wheels
from gpuform.providers.common.shell import Shell as Connection

WORKER_REQUIREMENTS = ["aiohttp>=3.9"]


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
           requirements: list[str], with_deps: bool) -> str:
    """A Python on the host that can import gpuform (and ``requirements``); returns its interpreter path.

    ``venv`` None: a virtualenv ``DATA_DIR/venvs/NAME`` made from ``python``. Otherwise ``venv`` names an
    existing environment (or interpreter) to install into. ``with_deps`` installs all of gpuform's
    dependencies (the gateway); otherwise gpuform alone plus the worker SDK's (workers).
    """
    platform = platform_of(conn, python)
    reqs = sorted(set(requirements + (wheels.gpuform_requirements() if with_deps else WORKER_REQUIREMENTS)))
    house = wheels.build(cache, platform, reqs)
    remote_house = upload_wheelhouse(conn, house, shared_dir)
    interpreter = _interpreter(conn, venv) if venv else posixpath.join(data_dir, "venvs", name, "bin", "python")
    stamp_path = posixpath.join(posixpath.dirname(posixpath.dirname(interpreter)), ".gpuform-stamp")
    stamp = hashlib.sha256(f"{house.name}".encode()).hexdigest()[:16]
    if conn.run(["cat", stamp_path], check=False).text.strip() == stamp:
        return interpreter
    if venv is None:
        conn.run([python, "-m", "venv", posixpath.dirname(posixpath.dirname(interpreter))])
    gpuform_wheel = next(p.name for p in house.glob("gpuform-*.whl"))
    install = [interpreter, "-m", "pip", "install", "--disable-pip-version-check", "--no-index", "--find-links",
               remote_house, "--upgrade"]
    conn.run([*install, "--no-deps", "--force-reinstall", posixpath.join(remote_house, gpuform_wheel)], timeout=900)
    conn.run([*install, *reqs], timeout=900)
    conn.write_file(stamp_path, stamp.encode())
    return interpreter


def _interpreter(conn: Connection, venv: str) -> str:
    candidate = posixpath.join(venv, "bin", "python")
    if conn.run(["test", "-x", candidate], check=False).code == 0:
        return candidate
    return venv
