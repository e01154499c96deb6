"""Backups of a SQLite gateway store: a consistent copy taken while the gateway runs, and a restore staged
beside the database and taken when the gateway starts again.

A snapshot reads the database through a connection of its own with SQLite's online backup API (one read
transaction: a consistent copy whatever the gateway writes meanwhile, without stopping it). A restore is
checked first (a SQLite database with gpuform's tables, not damaged, a schema this gpuform can open, written by
this deployment), then staged as ``gateway.db.restore``; :func:`take_staged` swaps it in at the next start,
keeping the database it replaces as ``gateway.db.before-restore``. A PostgreSQL store is backed up with
PostgreSQL's tools (pg_dump/pg_restore), see docs/ha.md.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from gpuform.errors import StoreError
from gpuform.gateway.sqlite import SCHEMA_VERSION

STAGED = ".restore"
REPLACED = ".before-restore"
_SIDE_FILES = ("", "-wal", "-shm")


def snapshot(db: Path, dest: Path) -> None:
    """Copy the database at ``db`` to ``dest`` (mode 0600), consistently, while the gateway goes on writing."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        source = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        target = sqlite3.connect(dest)
        with contextlib.closing(source), contextlib.closing(target):
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise StoreError(f"backing up the gateway database {db} failed: {exc}",
                         "Check the gateway host's disk space, then try again.") from exc


def check(path: Path, lineage: str) -> None:
    """Raise StoreError unless ``path`` is a gateway database this gateway may restore."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        with contextlib.closing(conn):
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StoreError("the backup is damaged (SQLite's quick_check failed)", "Restore another backup.")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            row = conn.execute("SELECT value FROM meta WHERE key='lineage'").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"the file is not a gateway backup: {exc}",
                         "Give a file written by `gpuform gateway backup`.") from exc
    if version > SCHEMA_VERSION:
        raise StoreError(f"the backup has schema version {version}, newer than this gpuform's ({SCHEMA_VERSION})",
                         "Restore it with the gpuform that wrote it, or upgrade this one.")
    if row is not None and row[0] != lineage:
        raise StoreError("the backup is another gpuform deployment's (another state lineage)",
                         "Restore it into the gateway of the deployment that wrote it.")


def stage(upload: Path, db: Path) -> None:
    """Make ``upload`` (checked) the database the gateway takes at its next start."""
    upload.replace(db.with_name(db.name + STAGED))


def take_staged(db: Path) -> bool:
    """At start, before the database is opened: swap in a staged restore (the replaced database is kept as
    ``NAME.before-restore``). Returns whether there was one."""
    staged = db.with_name(db.name + STAGED)
    if not staged.exists():
        return False
    for suffix in _SIDE_FILES:
        current = db.with_name(db.name + suffix)
        if current.exists():
            current.replace(db.with_name(db.name + REPLACED + suffix))
    staged.replace(db)
    return True
