"""Volumes on SSH hosts, one host at a time: what a host holds, checksums, placing verified files, the record.

Only POSIX tools are needed on the host (``find``, ``sha256sum``, ``mkdir``). A staged volume's recorded
manifest (``.gpuform-manifest.json``) lets refresh judge the files by size and modification time; staging
rewrites it as files are verified, so an interrupted staging resumes with what is already there, and a
file present with the right size but not recorded is checksummed on the host rather than copied again.
``gpuform/providers/common/staging.py`` moves files between this machine and the hosts.
"""

from __future__ import annotations

import json
import posixpath
import time
from pathlib import Path
from typing import Any

from gpuform.errors import ProviderError, SSHError
from gpuform.provider import Observation, ProviderContext, VolumeSpec
from gpuform.providers.common.shell import Shell as Connection
from gpuform.util.manifests import (
    MANIFEST_NAME,
    Checksums,
    Manifest,
    declared_source,
    host_view,
    manifest_record,
    observed_content,
    to_copy,
)
from gpuform.util.volume_checks import HashCache, HostCheck, check_host

PARTIAL = ".gpuform-partial"
BATCH = 200
RECORD_EVERY_S = 2.0


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


def hashes(conn: Connection, names: list[str]) -> dict[str, str]:
    """sha256 of the files ``names`` (full paths) that the host can read, by full path."""
    out: dict[str, str] = {}
    for start in range(0, len(names), BATCH):
        result = conn.run(["sha256sum", "--", *names[start:start + BATCH]], check=False)
        for line in result.text.splitlines():
            digest, _, name = line.partition("  ")
            out[name] = digest
    return out


def check_existing(conn: Connection, host: str, path: str, sums: Checksums | None,
                   cache: HashCache) -> HostCheck | None:
    """A volume without source on one host (None: ``path`` does not exist there); writes nothing."""
    found = stats(conn, path)
    if found is None:
        return None

    def hasher(rels: list[str]) -> dict[str, str]:
        got = hashes(conn, [posixpath.join(path, r) for r in rels])
        return {r: got[posixpath.join(path, r)] for r in rels if posixpath.join(path, r) in got}

    return check_host(host, path, found, sums, cache, hasher)


class HostVolume:
    """One host's side of a staging: the files verified there so far, and how to add to them."""

    def __init__(self, name: str, conn: Connection, path: str, source: Manifest) -> None:
        self.name, self.conn, self.path, self.source = name, conn, path, source
        self.have: Manifest = {}
        self.opened = False  # what the host holds has been read: ``have`` may be recorded
        self._recorded_at = 0.0

    def full(self, rel: str) -> str:
        return posixpath.join(self.path, rel)

    def open(self) -> list[str]:
        """Read what the host holds (checksumming same-size files it has not recorded); the files it lacks."""
        self.conn.run(["mkdir", "-p", self.path])
        found = stats(self.conn, self.path) or {}
        self.have = {r: e for r, e in host_view(recorded(self.conn, self.path), found).items()
                     if self.source.get(r) == e}
        unsure = [r for r in to_copy(self.source, self.have) if r in found and found[r][0] == self.source[r][0]]
        sums = hashes(self.conn, [self.full(r) for r in unsure])
        verified = {r: self.source[r] for r in unsure if sums.get(self.full(r)) == self.source[r][1]}
        self.opened = True
        if verified:
            self.have.update(verified)
            self.record(force=True)
        return self.todo()

    def todo(self) -> list[str]:
        return to_copy(self.source, self.have)

    def make_parents(self, rels: list[str]) -> None:
        parents = sorted({posixpath.dirname(self.full(r)) for r in rels} - {self.path})
        for start in range(0, len(parents), BATCH):
            self.conn.run(["mkdir", "-p", *parents[start:start + BATCH]])

    def place(self, rels: list[str]) -> None:
        """Checksum the received ``REL.gpuform-partial`` files, then move them into place; ProviderError on a
        mismatch (the partial file is removed)."""
        sums = hashes(self.conn, [self.full(r) + PARTIAL for r in rels])
        for rel in rels:
            if sums.get(self.full(rel) + PARTIAL) != self.source[rel][1]:
                self.conn.run(["rm", "-f", "--", self.full(rel) + PARTIAL])
                raise ProviderError(f"checksum mismatch for {rel} on {self.conn.target.label}",
                                    "The file changed while copying, or the disk is failing; run apply again.")
            self.conn.rename(self.full(rel) + PARTIAL, self.full(rel))
            self.have[rel] = self.source[rel]
        self.record()

    def record(self, force: bool = False) -> None:
        """Write the manifest of the files verified so far (at most every RECORD_EVERY_S unless forced)."""
        now = time.monotonic()
        if not force and now - self._recorded_at < RECORD_EVERY_S:
            return
        self._recorded_at = now
        after = stats(self.conn, self.path) or {}
        mtimes = {rel: st[1] for rel, st in after.items()}
        self.conn.write_file(self.full(MANIFEST_NAME), manifest_record(self.have, mtimes).encode())

    def finish(self) -> None:
        """Remove files the source no longer has and leftover partial files; record the final manifest."""
        extra = sorted(set(stats(self.conn, self.path) or {}) - set(self.source))
        for start in range(0, len(extra), BATCH):
            self.conn.run(["rm", "-f", "--", *(self.full(r) for r in extra[start:start + BATCH])])
        self.conn.run(["find", self.path, "-name", "*" + PARTIAL, "-type", "f", "-delete"], check=False)
        self.record(force=True)


def remove(conn: Connection, path: str) -> None:
    """Delete the staged files (those in the recorded manifest) and the directory if it is left empty."""
    record = recorded(conn, path)
    if record is None:
        return
    files = [posixpath.join(path, r) for r in (record.get("files") or {})]
    for start in range(0, len(files), BATCH):
        conn.run(["rm", "-f", "--", *files[start:start + BATCH]])
    conn.run(["rm", "-f", "--", posixpath.join(path, MANIFEST_NAME)])
    conn.run(["find", path, "-depth", "-type", "d", "-empty", "-delete"], check=False)


def source_of(ctx: ProviderContext, volume: VolumeSpec) -> tuple[Path, Manifest]:
    """The volume's source directory and its manifest (hashes cached in the state directory)."""
    if volume.source is None:
        raise ProviderError("this volume has no source to stage", "Set `source`, or leave the files on the hosts.")
    return declared_source(ctx.config_dir, ctx.state_dir, volume.source)


def observe(ctx: ProviderContext, prior: VolumeSpec, found: dict[str, Manifest | None],
            unreachable: dict[str, str]) -> Observation | None:
    """What refresh reports for a staged volume, from what each reachable host holds (None: nothing there)."""
    if all(v is None for v in found.values()):
        return None
    try:
        _, source = source_of(ctx, prior)
    except ProviderError:
        source = {}
    holding = {h: v or {} for h, v in found.items()}
    notes = [f"{h} unreachable, not checked: {e}" for h, e in unreachable.items()]
    for host, files in holding.items():
        todo = to_copy(source, files)
        if todo:
            notes.append(f"{len(todo)} file(s), {sum(source[r][0] for r in todo)} bytes to copy to {host}")
    return Observation({"content": observed_content(source, holding) if source else prior.content,
                        "hosts": {h: {"files": len(v)} for h, v in holding.items()}}, notes)
