"""Volumes on SSH hosts: stage a source directory over SFTP, skip what is already there, verify checksums.

Only POSIX tools are needed on the host (``find``, ``sha256sum``, ``mkdir``); the recorded manifest
(``.gpuform-manifest.json``) lets refresh judge the staged files by size and modification time.
"""

from __future__ import annotations

import json
import posixpath
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuform.errors import ProviderError, SSHError
from gpuform.provider import Observation, ProviderContext, VolumeSpec
from gpuform.providers.common.shell import Shell as Connection
from gpuform.util.manifests import (
    MANIFEST_NAME,
    Manifest,
    declared_source,
    extra_files,
    host_view,
    manifest_record,
    observed_content,
    to_copy,
)

Transfer = Callable[[str, int, int], None]  # (label, bytes done, bytes total)
PARTIAL = ".gpuform-partial"


def stats(conn: Connection, path: str) -> dict[str, tuple[int, str]] | None:
    """relpath -> (size, mtime) of every file under ``path``; None when the directory does not exist."""
    result = conn.run(["find", path, "-type", "f", "-printf", "%P\t%s\t%T@\n"], check=False)
    if result.code != 0:
        if b"No such file" in result.stderr:
            return None
        raise SSHError(f"listing {path} on {conn.target.label} failed: {result.stderr.decode(errors='replace')}",
                       "Check permissions on the host.", conn.target.label)
    out: dict[str, tuple[int, str]] = {}
    for line in result.text.splitlines():
        rel, size, mtime = line.split("\t")
        if rel != MANIFEST_NAME and not rel.endswith(PARTIAL):
            out[rel] = (int(size), mtime)
    return out


def recorded(conn: Connection, path: str) -> dict[str, Any] | None:
    result = conn.run(["cat", posixpath.join(path, MANIFEST_NAME)], check=False)
    if result.code != 0:
        return None
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return None
    return data


def held(conn: Connection, path: str) -> Manifest | None:
    """What the host holds, judged against its recorded manifest; None when the directory is missing."""
    found = stats(conn, path)
    if found is None:
        return None
    return host_view(recorded(conn, path), found)


def stage(conn: Connection, path: str, source_dir: Path, source: Manifest, transfer: Transfer,
          cancelled: threading.Event) -> int:
    """Copy what ``conn``'s host lacks; returns the number of files copied."""
    conn.run(["mkdir", "-p", path])
    have = held(conn, path) or {}
    todo = to_copy(source, have)
    total = sum(source[r][0] for r in todo)
    parents = sorted({posixpath.dirname(posixpath.join(path, r)) for r in todo} - {path})
    if parents:
        conn.run(["mkdir", "-p", *parents])
    done = 0
    for rel in todo:
        if cancelled.is_set():
            raise ProviderError("volume staging interrupted", "Run apply again to finish copying.")
        conn.put(source_dir / rel, posixpath.join(path, rel) + PARTIAL, callback=_progress(transfer, conn, path,
                                                                                       done, total))
        done += source[rel][0]
    _verify(conn, path, todo, source)
    for rel in extra_files(source, stats(conn, path) or {}):
        conn.run(["rm", "-f", "--", posixpath.join(path, rel)])
    after = stats(conn, path) or {}
    mtimes = {rel: st[1] for rel, st in after.items()}
    conn.write_file(posixpath.join(path, MANIFEST_NAME), manifest_record(source, mtimes).encode())
    return len(todo)


def _progress(transfer: Transfer, conn: Connection, path: str, base: int, total: int) -> Callable[[int, int], None]:
    label = f"{conn.target.address}:{path}"
    return lambda sent, _size: transfer(label, base + sent, total)


def _verify(conn: Connection, path: str, todo: list[str], source: Manifest) -> None:
    """Checksum the copied files, then move them into place."""
    for start in range(0, len(todo), 200):
        batch = todo[start:start + 200]
        result = conn.run(["sha256sum", "--", *(posixpath.join(path, r) + PARTIAL for r in batch)])
        sums = dict(line.split("  ", 1)[::-1] for line in result.text.splitlines())
        for rel in batch:
            partial = posixpath.join(path, rel) + PARTIAL
            if sums.get(partial) != source[rel][1]:
                conn.run(["rm", "-f", "--", partial])
                raise ProviderError(f"checksum mismatch for {rel} on {conn.target.label}",
                                    "The file changed while copying, or the disk is failing; run apply again.")
            conn.rename(partial, posixpath.join(path, rel))


def remove(conn: Connection, path: str) -> None:
    """Delete the staged files (those in the recorded manifest) and the directory if it is left empty."""
    record = recorded(conn, path)
    if record is None:
        return
    files = [posixpath.join(path, r) for r in (record.get("files") or {})]
    for start in range(0, len(files), 200):
        conn.run(["rm", "-f", "--", *files[start:start + 200]])
    conn.run(["rm", "-f", "--", posixpath.join(path, MANIFEST_NAME)])
    conn.run(["find", path, "-depth", "-type", "d", "-empty", "-delete"], check=False)


def source_of(ctx: ProviderContext, volume: VolumeSpec) -> tuple[Path, Manifest]:
    """The volume's source directory and its manifest (hashes cached in the state directory)."""
    return declared_source(ctx.config_dir, ctx.state_dir, volume.source)


def observe(ctx: ProviderContext, prior: VolumeSpec, found: dict[str, Manifest | None],
            unreachable: dict[str, str]) -> Observation | None:
    """What refresh reports for a volume, from what each reachable host holds (None: nothing there)."""
    if all(v is None for v in found.values()):
        return None
    try:
        _, source = source_of(ctx, prior)
    except ProviderError:
        source = {}
    held = {h: v or {} for h, v in found.items()}
    notes = [f"{h} unreachable, not checked: {e}" for h, e in unreachable.items()]
    for host, files in held.items():
        todo = to_copy(source, files)
        if todo:
            notes.append(f"{len(todo)} file(s), {sum(source[r][0] for r in todo)} bytes to copy to {host}")
    return Observation({"content": observed_content(source, held) if source else prior.content,
                        "hosts": {h: {"files": len(v)} for h, v in held.items()}}, notes)
