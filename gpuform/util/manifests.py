"""Volume manifests: what a source directory holds (size and sha256 per file) and what a host lacks.

Hosts keep ``.gpuform-manifest.json`` beside the staged files; refresh compares the files' sizes and
modification times with it (cheap, no re-hashing), and staging verifies checksums of what it copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = ".gpuform-manifest.json"
Manifest = dict[str, tuple[int, str]]  # relpath -> (size, sha256)
Checksums = dict[str, str]  # relpath -> sha256 (a volume's `manifest:` file, as sha256sum prints it)
PRESENT = "present on every host"  # the content of a volume without `source` or `manifest` when all is well
Stats = Mapping[str, tuple[int, int | str]]  # relpath -> (size, mtime): ns locally, find's %T@ remotely


@dataclass(frozen=True)
class VolumeSource:
    """What a volume's source directory holds (scanned on the operator's machine)."""

    digest: str
    files: int
    bytes: int
    manifest: dict[str, tuple[int, str]] = field(default_factory=dict)  # relpath -> (size, sha256)
    error: str = ""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_digest(manifest: Manifest) -> str:
    h = hashlib.sha256()
    for rel in sorted(manifest):
        size, digest = manifest[rel]
        h.update(f"{rel}\0{size}\0{digest}\n".encode())
    return "sha256:" + h.hexdigest()


def scan_source(directory: Path, cache_file: Path | None = None) -> VolumeSource:
    """Hash every file under ``directory``; reuse hashes from ``cache_file`` for unchanged files."""
    if not directory.is_dir():
        return VolumeSource("", 0, 0, error=f"source directory {directory} does not exist")
    cache = _load_cache(cache_file)
    manifest: Manifest = {}
    fresh: dict[str, Any] = {}
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(directory).as_posix()
            if rel == MANIFEST_NAME:
                continue
            st = path.stat()
            key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
            digest = cache.get(key) or sha256_file(path)
            fresh[key] = digest
            manifest[rel] = (st.st_size, digest)
    if cache_file is not None:
        _save_cache(cache_file, {**cache, **fresh})
    total = sum(size for size, _ in manifest.values())
    return VolumeSource(manifest_digest(manifest), len(manifest), total, manifest)


def declared_source(config_dir: Path, state_dir: Path, source: str) -> tuple[Path, Manifest]:
    """A volume's source directory (relative to the configuration) and its manifest; raises ProviderError."""
    from gpuform.errors import ProviderError

    src = (config_dir / source).resolve()
    scanned = scan_source(src, state_dir / ".cache" / "volume-sources.json")
    if scanned.error:
        raise ProviderError(scanned.error, "Fix `source:`; it is relative to the configuration directory.")
    return src, scanned.manifest


def parse_checksums(text: str) -> Checksums:
    """``sha256sum`` output (``HEX  RELPATH`` or ``HEX *RELPATH`` per line; blank lines and ``#`` comments
    skipped) as relpath -> sha256; raises ValueError naming the first bad line."""
    out: Checksums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        digest, sep, rel = line.partition(" ")
        rel = rel[1:] if rel[:1] in (" ", "*") else rel
        rel = rel[2:] if rel.startswith("./") else rel
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest) or not rel:
            raise ValueError(f"line {number} is not `SHA256  RELPATH`: {line[:80]!r}")
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"line {number}: {rel!r} must be a path relative to the volume, without `..`")
        out[rel] = digest.lower()
    if not out:
        raise ValueError("it lists no file")
    return out


def checksums_digest(sums: Checksums) -> str:
    h = hashlib.sha256()
    for rel in sorted(sums):
        h.update(f"{rel}\0{sums[rel]}\n".encode())
    return "sha256:" + h.hexdigest()


def read_checksums(config_dir: Path, manifest: str) -> Checksums:
    """A volume's ``manifest:`` file, parsed; raises ProviderError."""
    from gpuform.errors import ProviderError

    path = (config_dir / manifest).resolve()
    try:
        return parse_checksums(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProviderError(f"volume manifest {path}: {exc}", "Fix `manifest:` (run `sha256sum` in the volume "
                            "directory to write one); it is relative to the configuration directory.") from exc


def manifest_source(config_dir: Path, manifest: str) -> VolumeSource:
    """What a volume's ``manifest:`` file lists (digest and file count; sizes are unknown until a host is read)."""
    try:
        sums = parse_checksums((config_dir / manifest).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return VolumeSource("", 0, 0, error=f"volume manifest {manifest}: {exc}")
    return VolumeSource(checksums_digest(sums), len(sums), 0)


@dataclass(frozen=True)
class HostFiles:
    """What a host holds under a volume path, judged against its recorded manifest."""

    manifest: Manifest  # as recorded after the last staging, for files whose size and mtime still match
    missing_or_changed: list[str]


def host_view(recorded: dict[str, Any] | None, stats: Stats) -> Manifest:
    """Files of the recorded manifest whose (size, mtime_ns) still match ``stats`` (relpath -> stat)."""
    if not recorded:
        return {}
    out: Manifest = {}
    for rel, entry in (recorded.get("files") or {}).items():
        size, digest, mtime = int(entry[0]), str(entry[1]), entry[2]
        if stats.get(rel) == (size, mtime):
            out[rel] = (size, digest)
    return out


def to_copy(source: Manifest, host: Manifest) -> list[str]:
    """Relative paths the host lacks or holds with other contents."""
    return sorted(rel for rel, entry in source.items() if host.get(rel) != entry)


def extra_files(source: Manifest, stats: Stats) -> list[str]:
    return sorted(rel for rel in stats if rel not in source and rel != MANIFEST_NAME)


def observed_content(source: Manifest, hosts: dict[str, Manifest]) -> str:
    """The content digest all hosts agree on, or a description of how they differ."""
    digests = {h: manifest_digest(m) for h, m in hosts.items()}
    if hosts and len(set(digests.values())) == 1:
        only: Manifest = next(iter(hosts.values()))
        if only == source or not source:
            return next(iter(digests.values()))
    differing = sorted(h for h, m in hosts.items() if m != source)
    missing = sum(len(to_copy(source, hosts[h])) for h in differing)
    return f"differs on {', '.join(differing)} ({missing} file(s) missing or changed)"


def manifest_record(source: Manifest, mtimes: Mapping[str, int | str]) -> str:
    files = {rel: [size, digest, mtimes.get(rel, 0)] for rel, (size, digest) in source.items()}
    return json.dumps({"version": 1, "digest": manifest_digest(source), "files": files}, sort_keys=True)


def _load_cache(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_cache(path: Path, cache: dict[str, str]) -> None:
    """Best effort, safe from concurrent writers (refresh scans volumes on several threads and processes):
    each writes its own temporary file and renames it into place; the last rename wins."""
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written only costs re-hashing next time
        if tmp:
            Path(tmp).unlink(missing_ok=True)
