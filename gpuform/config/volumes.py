"""Checks of a volume against this machine: its ``source`` directory exists and holds only model files, its
``manifest`` file parses, and the two are not combined. Located at the field, each with how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gpuform.config import schema
from gpuform.diagnostics import Diagnostic, error
from gpuform.util.manifests import parse_checksums

if TYPE_CHECKING:
    from gpuform.config.load import Config


def check_volume(config: Config, name: str, vol: schema.Volume) -> list[Diagnostic]:
    if vol.source is not None and vol.manifest is not None:
        return [_error(config, name, "manifest", "`manifest` is for volumes without `source` (a staged volume's "
                       "checksums come from its source directory)",
                       "Remove `manifest`, or remove `source` to check files already on the hosts.")]
    if vol.source is not None:
        return _check_source(config, name, vol.source)
    if vol.manifest is not None:
        return _check_manifest(config, name, vol.manifest)
    return []


def _check_source(config: Config, name: str, source: str) -> list[Diagnostic]:
    """The source must exist, and must not be the configuration directory, an ancestor of it, or the state
    directory: staging it would copy the configuration, generated keys and state onto every host."""
    config_dir = config.directory.resolve()
    where = (config_dir / source).resolve()
    state_dir = (config_dir / (config.backend.path or "state")).resolve()
    if not where.is_dir():
        what = "is not a directory" if where.exists() else "does not exist"
        return [_error(config, name, "source", f'volume source "{source}" {what} on this machine ({where})',
                       "Put the model files there (the examples say how in the comment at the top of their "
                       "gpuform.yaml), fix `source` (it is relative to the configuration directory), or remove "
                       "`source` if the files are already on every host at `path`.")]
    if config_dir.is_relative_to(where):
        problem = "is the configuration directory" if where == config_dir else "contains the configuration directory"
    elif where.is_relative_to(state_dir):
        problem = "is inside the state directory"
    else:
        return []
    return [_error(config, name, "source", f'volume source "{source}" {problem}; staging it would copy '
                   "configuration, keys and state to every host",
                   "Point `source` at a directory holding only the model files, e.g. ./models/NAME.")]


def _check_manifest(config: Config, name: str, manifest: str) -> list[Diagnostic]:
    where = (config.directory.resolve() / manifest).resolve()
    try:
        parse_checksums(Path(where).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [_error(config, name, "manifest", f'volume manifest "{manifest}" does not exist ({where})',
                       "Write it on a host that has the files (cd PATH && find . -type f -exec sha256sum {} +), "
                       "or remove `manifest` to check only that the files are there.")]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [_error(config, name, "manifest", f'volume manifest "{manifest}" cannot be used: {exc}',
                       "Use what `sha256sum` prints: one `SHA256  RELPATH` line per file, paths relative to the "
                       "volume's `path`.")]
    return []


def _error(config: Config, name: str, field: str, summary: str, fix: str) -> Diagnostic:
    return error(summary, fix, config.sources.locate(("volumes", name, field)), f"volume.{name}")
