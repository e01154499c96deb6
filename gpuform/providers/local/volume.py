"""Volumes on this machine: copy the source directory to the volume path, skipping what is already there
(recorded, or the same size and checksum), recording progress as files are verified so an interrupted copy
resumes where it stopped. A volume without ``source`` is only checked: gpuform never writes or deletes there."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from gpuform import faults
from gpuform.errors import ProviderError
from gpuform.provider import Attrs, Observation, ProviderContext, VolumeSpec
from gpuform.providers.common import existing_volume
from gpuform.util.manifests import (
    MANIFEST_NAME,
    Checksums,
    Manifest,
    declared_source,
    extra_files,
    host_view,
    manifest_record,
    observed_content,
    sha256_file,
    to_copy,
)
from gpuform.util.volume_checks import HostCheck, check_host

HOST = "localhost"
PARTIAL = ".gpuform-partial"
RECORD_EVERY_S = 2.0


class LocalVolumes:
    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    def source(self, volume: VolumeSpec) -> Manifest:
        if volume.source is None:
            raise ProviderError("this volume has no source to stage", "Set `source`, or leave the files in place.")
        return declared_source(self.ctx.config_dir, self.ctx.state_dir, volume.source)[1]

    def _stats(self, path: Path) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for root, _dirs, files in os.walk(path):
            for name in files:
                full = Path(root) / name
                st = full.stat()
                out[full.relative_to(path).as_posix()] = (st.st_size, st.st_mtime_ns)
        out.pop(MANIFEST_NAME, None)
        return {rel: st for rel, st in out.items() if not rel.endswith(PARTIAL)}

    def _recorded(self, path: Path) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((path / MANIFEST_NAME).read_text())
        except (OSError, ValueError):
            return None
        return data

    def _check(self, volume: VolumeSpec) -> tuple[Checksums | None, dict[str, HostCheck | None]]:
        sums, cache = existing_volume.checksums(self.ctx, volume), existing_volume.hash_cache(self.ctx)
        path = Path(volume.path)
        if not path.is_dir():
            return sums, {HOST: None}

        def hasher(rels: list[str]) -> dict[str, str]:
            return {r: sha256_file(path / r) for r in rels}

        return sums, {HOST: check_host(HOST, volume.path, self._stats(path), sums, cache, hasher)}

    def read(self, prior: VolumeSpec) -> Observation | None:
        if prior.source is None:
            return existing_volume.observe(prior, *self._check(prior), {})
        path = Path(prior.path)
        if not path.is_dir():
            return None
        held = host_view(self._recorded(path), self._stats(path))
        try:
            source = self.source(prior)
        except ProviderError:
            source = {}
        todo = to_copy(source, held) if source else []
        size = sum(source[r][0] for r in todo)
        notes = [f"{len(todo)} file(s), {size} bytes to copy to {HOST}"] if todo else []
        return Observation({"content": observed_content(source, {HOST: held}) if source else prior.content,
                            "hosts": {HOST: {"files": len(held), "bytes_to_copy": size}}}, notes)

    def stage(self, volume: VolumeSpec) -> Attrs:
        if volume.source is None:
            return existing_volume.require(volume, *self._check(volume))
        path = Path(volume.path)
        source_dir = (self.ctx.config_dir / volume.source).resolve()
        source = self.source(volume)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProviderError(f"cannot create {path}: {exc.strerror}", "Check permissions or choose another path.",
                                f"volume at {path}") from exc
        copied = [] if path.resolve() == source_dir else _Copy(self.ctx, path, source).run(source_dir, self)
        for rel in extra_files(source, self._stats(path)):
            with contextlib.suppress(OSError):
                (path / rel).unlink()
        self._record(path, source)
        return {"hosts": {HOST: {"files": len(source), "copied": len(copied)}}}

    def _record(self, path: Path, have: Manifest) -> None:
        mtimes = {rel: st[1] for rel, st in self._stats(path).items()}
        (path / MANIFEST_NAME).write_text(manifest_record(have, mtimes))

    def delete(self, prior: VolumeSpec) -> None:
        if prior.source is None:
            return  # files gpuform did not put there: never deleted
        path = Path(prior.path)
        recorded = self._recorded(path)
        if recorded is None:
            return
        for rel in recorded.get("files") or {}:
            with contextlib.suppress(OSError):
                (path / rel).unlink()
        with contextlib.suppress(OSError):
            (path / MANIFEST_NAME).unlink()
        for root, _dirs, _files in sorted(os.walk(path), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                Path(root).rmdir()


class _Copy:
    """One copy into ``path``: what is there already is kept; progress is recorded as files are verified."""

    def __init__(self, ctx: ProviderContext, path: Path, source: Manifest) -> None:
        self.ctx, self.path, self.source = ctx, path, source
        self.recorded_at = 0.0

    def run(self, source_dir: Path, volumes: LocalVolumes) -> list[str]:
        stats = volumes._stats(self.path)
        have = {r: e for r, e in host_view(volumes._recorded(self.path), stats).items() if self.source.get(r) == e}
        for rel in to_copy(self.source, have):  # there, not recorded (an interrupted copy): checksum, not copy
            if rel in stats and stats[rel][0] == self.source[rel][0] and sha256_file(self.path / rel) == \
                    self.source[rel][1]:
                have[rel] = self.source[rel]
        todo = to_copy(self.source, have)
        total, done = sum(self.source[r][0] for r in todo), 0
        try:
            for rel in todo:
                if self.ctx.cancelled.is_set():
                    raise ProviderError("volume staging interrupted", "Run apply again to finish copying; files "
                                        "already verified are kept.")
                self._copy_one(source_dir, rel)
                have[rel] = self.source[rel]
                done += self.source[rel][0]
                self.ctx.transfer(f"localhost:{self.path}", done, total)
                if time.monotonic() - self.recorded_at >= RECORD_EVERY_S:
                    self.recorded_at = time.monotonic()
                    volumes._record(self.path, have)
                faults.point("volume.placed")
        except BaseException:
            volumes._record(self.path, have)  # what is verified, so plan and the next apply start from there
            raise
        return todo

    def _copy_one(self, source_dir: Path, rel: str) -> None:
        dest = self.path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + PARTIAL)
        shutil.copyfile(source_dir / rel, tmp)
        if sha256_file(tmp) != self.source[rel][1]:
            tmp.unlink()
            raise ProviderError(f"checksum mismatch copying {rel}", "The source changed while copying; "
                                "run apply again.")
        tmp.replace(dest)
