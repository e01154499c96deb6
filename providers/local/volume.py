"""Volumes on this machine: copy the source directory to the volume path, skipping what is already there."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from gpuform.errors import ProviderError
from gpuform.provider import Attrs, Observation, ProviderContext, VolumeSpec
from gpuform.util.manifests import (
    MANIFEST_NAME,
    Manifest,
    declared_source,
    extra_files,
    host_view,
    manifest_record,
    observed_content,
    sha256_file,
    to_copy,
)

HOST = "localhost"


class LocalVolumes:
    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    def source(self, volume: VolumeSpec) -> Manifest:
        return declared_source(self.ctx.config_dir, self.ctx.state_dir, volume.source)[1]

    def _stats(self, path: Path) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for root, _dirs, files in os.walk(path):
            for name in files:
                full = Path(root) / name
                st = full.stat()
                out[full.relative_to(path).as_posix()] = (st.st_size, st.st_mtime_ns)
        out.pop(MANIFEST_NAME, None)
        return out

    def _recorded(self, path: Path) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((path / MANIFEST_NAME).read_text())
        except (OSError, ValueError):
            return None
        return data

    def read(self, prior: VolumeSpec) -> Observation | None:
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
        path = Path(volume.path)
        source_dir = (self.ctx.config_dir / volume.source).resolve()
        source = self.source(volume)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProviderError(f"cannot create {path}: {exc.strerror}", "Check permissions or choose another path.",
                                f"volume at {path}") from exc
        if path.resolve() == source_dir:
            copied: list[str] = []
        else:
            copied = self._copy(source_dir, path, source)
        stats = self._stats(path)
        for rel in extra_files(source, stats):
            with contextlib.suppress(OSError):
                (path / rel).unlink()
        mtimes = {rel: st[1] for rel, st in self._stats(path).items()}
        (path / MANIFEST_NAME).write_text(manifest_record(source, mtimes))
        return {"hosts": {HOST: {"files": len(source), "copied": len(copied)}}}

    def _copy(self, source_dir: Path, path: Path, source: Manifest) -> list[str]:
        held = host_view(self._recorded(path), self._stats(path))
        todo = to_copy(source, held)
        total = sum(source[r][0] for r in todo)
        done = 0
        for rel in todo:
            if self.ctx.cancelled.is_set():
                raise ProviderError("volume staging interrupted", "Run apply again to finish copying.")
            dest = path / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".gpuform-partial")
            shutil.copyfile(source_dir / rel, tmp)
            if sha256_file(tmp) != source[rel][1]:
                tmp.unlink()
                raise ProviderError(f"checksum mismatch copying {rel}", "The source changed while copying; "
                                    "run apply again.")
            tmp.replace(dest)
            done += source[rel][0]
            self.ctx.transfer(f"localhost:{path}", done, total)
        return todo

    def delete(self, prior: VolumeSpec) -> None:
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
