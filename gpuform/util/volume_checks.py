"""Volumes already on the hosts (no ``source``): what each host holds under ``path``, judged against the
``manifest:`` checksums when there is one, and what refresh and apply report from it.

Hashes of host files are cached on this machine (``state/.cache/volume-hosts.json``) by host, path, size and
modification time, so a refresh re-hashes only files that changed; gpuform never writes on such a host.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpuform.util.manifests import PRESENT, Checksums, Stats, checksums_digest

Hasher = Callable[[list[str]], dict[str, str]]  # relpaths -> sha256 of those the host could read


@dataclass(frozen=True)
class HostCheck:
    """What one host holds under a volume's path, and what is wrong with it."""

    files: int
    bytes: int
    listing: str  # digest of (relpath, size) of every file: hosts without a manifest must agree on it
    problems: list[str] = field(default_factory=list)


class HashCache:
    """sha256 of host files by (host, path, size, mtime); safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self._data: dict[str, str] = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    @staticmethod
    def key(host: str, full: str, stat: tuple[int, int | str]) -> str:
        return f"{host}|{full}|{stat[0]}|{stat[1]}"

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._data.get(key)

    def put(self, values: Mapping[str, str]) -> None:
        if not values:
            return
        with self._lock:
            self._data.update(values)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(self._data), encoding="utf-8")
            tmp.replace(self.path)


def check_host(host: str, path: str, stats: Stats, sums: Checksums | None, cache: HashCache,
               hasher: Hasher) -> HostCheck:
    """Judge ``stats`` (relpath -> (size, mtime)) of one host against ``sums``; hashes only uncached files."""
    listing = _listing(stats)
    total = sum(int(s[0]) for s in stats.values())
    if sums is None:
        problems = [] if stats else ["the directory is empty"]
        return HostCheck(len(stats), total, listing, problems)
    missing = sorted(rel for rel in sums if rel not in stats)
    present = [rel for rel in sums if rel in stats]
    keys = {rel: HashCache.key(host, f"{path}/{rel}", stats[rel]) for rel in present}
    known = {rel: cache.get(k) for rel, k in keys.items()}
    fresh = hasher([rel for rel, digest in known.items() if digest is None]) if None in known.values() else {}
    cache.put({keys[rel]: digest for rel, digest in fresh.items()})
    found = {rel: known[rel] or fresh.get(rel) for rel in present}
    differ = sorted(rel for rel, digest in found.items() if digest != sums[rel])
    problems = ([f"{len(missing)} file(s) of the manifest missing ({_few(missing)})"] if missing else []) + (
        [f"{len(differ)} file(s) with another checksum ({_few(differ)})"] if differ else [])
    return HostCheck(len(stats), total, listing, problems)


def verdict(expected: str, checks: Mapping[str, HostCheck | None], manifest: bool) -> str:
    """The observed ``content`` of a volume without source: ``expected`` when every host passes."""
    missing = sorted(h for h, c in checks.items() if c is None)
    if missing:
        return f"missing on {', '.join(missing)}"
    bad = {h: c.problems for h, c in sorted(checks.items()) if c is not None and c.problems}
    if bad:
        return f"differs on {', '.join(bad)}: " + "; ".join(p for problems in bad.values() for p in problems)
    listings = {c.listing for c in checks.values() if c is not None}
    if not manifest and len(listings) > 1:
        sizes = ", ".join(f"{h}: {c.files} files, {c.bytes} bytes" for h, c in sorted(checks.items()) if c)
        return f"differs between hosts ({sizes})"
    return expected


def expected_content(sums: Checksums | None) -> str:
    return checksums_digest(sums) if sums is not None else PRESENT


def host_notes(checks: Mapping[str, HostCheck | None], path: str) -> list[str]:
    return [f"{h}: {path} does not exist" if c is None else f"{h}: {c.files} file(s), {c.bytes} bytes"
            for h, c in sorted(checks.items())]


def _listing(stats: Stats) -> str:
    h = hashlib.sha256()
    for rel in sorted(stats):
        h.update(f"{rel}\0{stats[rel][0]}\n".encode())
    return h.hexdigest()[:16]


def _few(rels: list[str]) -> str:
    return ", ".join(rels[:3]) + (f" and {len(rels) - 3} more" if len(rels) > 3 else "")
