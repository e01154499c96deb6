"""The gateway's durable store: one SQLite file in WAL mode.

A committed write survives the gateway being killed with -9 (WAL with ``synchronous=NORMAL`` loses
commits only on an operating-system crash or power loss). All access happens on the event loop's thread;
each call is a short transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, secret_env TEXT NOT NULL, revision TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, status TEXT NOT NULL, input BLOB,
    output BLOB, error TEXT, webhook TEXT, sync INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, completed_at REAL,
    execution_timeout REAL NOT NULL, ttl REAL NOT NULL, low_priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0, worker_id TEXT,
    idempotency_key TEXT, expires_at REAL, client_key TEXT);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(endpoint, status) WHERE status IN ('IN_QUEUE', 'IN_PROGRESS');
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(endpoint, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_ttl ON jobs(created_at + ttl);
CREATE TABLE IF NOT EXISTS chunks (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, pool TEXT NOT NULL, host TEXT, state TEXT NOT NULL,
    gpu_type TEXT, gpus INTEGER NOT NULL DEFAULT 0, price REAL, token_hash TEXT NOT NULL,
    spec_revision TEXT, requested_at REAL NOT NULL, started_at REAL, ready_at REAL, first_job_at REAL,
    stopped_at REAL, last_seen REAL, exit_reason TEXT, timeline TEXT);
CREATE TABLE IF NOT EXISTS ledger (
    worker_id TEXT NOT NULL, endpoint TEXT NOT NULL, day TEXT NOT NULL, gpu_type TEXT, gpus INTEGER NOT NULL,
    seconds REAL NOT NULL, cost REAL, PRIMARY KEY (worker_id, day));
"""


class Database:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def transaction(self) -> _Tx:
        return _Tx(self.conn)

    # ---- endpoints --------------------------------------------------------------------------------

    def put_endpoint(self, name: str, spec: dict[str, Any], secret_env: dict[str, str], revision: str) -> None:
        self.execute("INSERT INTO endpoints(name, spec, secret_env, revision, updated_at) VALUES (?,?,?,?,?) "
                     "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, secret_env=excluded.secret_env, "
                     "revision=excluded.revision, updated_at=excluded.updated_at",
                     (name, json.dumps(spec), json.dumps(secret_env), revision, time.time()))

    def endpoints(self) -> dict[str, tuple[dict[str, Any], dict[str, str], str]]:
        rows = self.execute("SELECT name, spec, secret_env, revision FROM endpoints").fetchall()
        return {r["name"]: (json.loads(r["spec"]), json.loads(r["secret_env"]), r["revision"]) for r in rows}

    def delete_endpoint(self, name: str) -> None:
        self.execute("DELETE FROM endpoints WHERE name=?", (name,))

    def get_meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (key, value))


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
