"""State in PostgreSQL (13 or later; tested on 15), for teams: one row per serial and workspace, the last N
serials kept, locks that die with their holder, generated secrets sealed with the team key, an audit log.

Tables live in their own schema (``schema_name``, default ``gpuform``), created on first use and versioned
(``meta.schema_version``). Locking is a session-level advisory lock whose id is derived from the schema and
the workspace (so unrelated projects sharing a database never block each other); the holder's details sit
in ``locks`` for whoever waits. A process killed with -9 loses its session, and with it the lock.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from gpuform.errors import StateError, StateLocked
from gpuform.state.model import Change, State
from gpuform.state.store import AuditEvent, LockInfo, Revision, new_lock_info, parse_state, replay, who_am_i
from gpuform.util.sealing import SealError, seal, unseal

SCHEMA_VERSION = 2  # 1: states, locks, secrets, audit; 2: journal


def _connect(url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StateError(f"cannot connect to the postgres backend: {str(exc).strip()}",
                         "Check backend.url (or GPUFORM_BACKEND_URL): host, port, user, password, database."
                         ) from exc


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[:1].isalpha():
        raise StateError(f'"{name}" is not a valid schema name', "Use letters, digits and _ only.")
    return f'"{name}"'


class PostgresBackend:
    """The postgres backend: a database holding every workspace's state."""

    def __init__(self, url: str, schema_name: str = "gpuform", history: int = 20, secrets_key: str | None = None):
        self.url = url
        self.schema = _ident(schema_name)
        self.schema_name = schema_name
        self.keep = history
        self.secrets_key = secrets_key
        self._conn: Any = None

    def conn(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self.url)
            self._migrate(self._conn)
        return self._conn

    def _migrate(self, conn: Any) -> None:
        s = self.schema
        with conn.transaction():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL)")
            row = conn.execute(f"SELECT value FROM {s}.meta WHERE key = 'schema_version'").fetchone()
            found = int(row[0]) if row else 0
            if found > SCHEMA_VERSION:
                raise StateError(f"the postgres backend's schema {self.schema_name} has version {found}, newer than "
                                 f"this gpuform knows ({SCHEMA_VERSION})", "Upgrade gpuform to the version the "
                                 "team uses (see required_version).")
            if found < 1:
                for statement in (
                    f"CREATE TABLE {s}.states (workspace text NOT NULL, serial bigint NOT NULL, lineage text NOT NULL, "
                    "document text NOT NULL, written_at timestamptz NOT NULL DEFAULT now(), written_by text NOT NULL, "
                    "PRIMARY KEY (workspace, serial))",
                    f"CREATE TABLE {s}.locks (workspace text PRIMARY KEY, info text NOT NULL)",
                    f"CREATE TABLE {s}.secrets (workspace text NOT NULL, name text NOT NULL, sealed text NOT NULL, "
                    "PRIMARY KEY (workspace, name))",
                    f"CREATE TABLE {s}.audit (id bigserial PRIMARY KEY, workspace text NOT NULL, "
                    "at timestamptz NOT NULL DEFAULT now(), who text NOT NULL, operation text NOT NULL, "
                    "detail text NOT NULL)",
                ):
                    conn.execute(statement)
            if found < 2:
                conn.execute(f"CREATE TABLE {s}.journal (workspace text NOT NULL, serial bigint NOT NULL, "
                             "lineage text NOT NULL, change text NOT NULL, PRIMARY KEY (workspace, serial))")
            if found < SCHEMA_VERSION:
                conn.execute(f"INSERT INTO {s}.meta VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE "
                             "SET value = excluded.value", (str(SCHEMA_VERSION),))

    def store(self, workspace: str) -> PostgresStateStore:
        return PostgresStateStore(self, workspace)

    def workspaces(self) -> list[str]:
        rows = self.conn().execute(f"SELECT DISTINCT workspace FROM {self.schema}.states").fetchall()
        return sorted({"default", *(r[0] for r in rows)})

    def delete_workspace(self, name: str) -> None:
        s = self.schema
        with self.conn().transaction():
            for table in ("states", "journal", "locks", "secrets"):
                self.conn().execute(f"DELETE FROM {s}.{table} WHERE workspace = %s", (name,))

    def describe(self) -> str:
        host = self.url.split("@")[-1].split("?")[0]
        return f"postgres://…@{host} (schema {self.schema_name})"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PostgresStateStore:
    def __init__(self, backend: PostgresBackend, workspace: str) -> None:
        self.backend = backend
        self.workspace = workspace
        self._lock_conn: Any = None
        self._lock_id: str | None = None

    @property
    def _s(self) -> str:
        return self.backend.schema

    def describe(self) -> str:
        return f"{self.backend.describe()}, workspace {self.workspace}"

    # ---- documents ----------------------------------------------------------------------------------

    def read(self) -> State:
        conn = self.backend.conn()
        with conn.transaction():  # one snapshot: the document and the changes appended since
            row = conn.execute(
                f"SELECT document, serial FROM {self._s}.states WHERE workspace = %s ORDER BY serial DESC LIMIT 1",
                (self.workspace,)).fetchone()
            if row is None:
                return State()
            changes = conn.execute(f"SELECT change FROM {self._s}.journal WHERE workspace = %s AND serial > %s "
                                   "ORDER BY serial", (self.workspace, row[1])).fetchall()
        state = parse_state(row[0], self.describe())
        replay(state, [c[0].encode() for c in changes], f"{self.describe()} journal")
        return state

    def write(self, state: State) -> None:
        """Insert the next serial (a serial written twice is refused: the lock was not held), drop the journal
        it absorbs, and keep the last N serials."""
        import psycopg

        state.serial += 1
        text = json.dumps(state.to_json())
        conn = self.backend.conn()
        try:
            with conn.transaction():
                conn.execute(f"INSERT INTO {self._s}.states (workspace, serial, lineage, document, written_by) "
                             "VALUES (%s, %s, %s, %s, %s)",
                             (self.workspace, state.serial, state.lineage, text, who_am_i()))
                conn.execute(f"DELETE FROM {self._s}.journal WHERE workspace = %s", (self.workspace,))
                conn.execute(f"DELETE FROM {self._s}.states WHERE workspace = %s AND serial < ALL (SELECT serial "
                             f"FROM {self._s}.states WHERE workspace = %s ORDER BY serial DESC LIMIT %s)",
                             (self.workspace, self.workspace, self.backend.keep))
        except psycopg.errors.UniqueViolation as exc:
            state.serial -= 1
            raise StateError(f"serial {state.serial + 1} of workspace {self.workspace} was written by someone else",
                             "Another operation changed the state without the lock; run plan again.") from exc
        except psycopg.Error as exc:
            state.serial -= 1
            raise StateError(f"writing the state failed: {str(exc).strip()}", "Check the database.") from exc

    def append(self, change: Change) -> None:
        """One row per change; a serial taken twice is refused (the lock was not held)."""
        import psycopg

        try:
            self.backend.conn().execute(
                f"INSERT INTO {self._s}.journal (workspace, serial, lineage, change) VALUES (%s, %s, %s, %s)",
                (self.workspace, change.serial, change.lineage, json.dumps(change.to_json())))
        except psycopg.errors.UniqueViolation as exc:
            raise StateError(f"serial {change.serial} of workspace {self.workspace} was written by someone else",
                             "Another operation changed the state without the lock; run plan again.") from exc
        except psycopg.Error as exc:
            raise StateError(f"saving the state failed: {str(exc).strip()}", "Check the database.") from exc

    def history(self) -> list[Revision]:
        rows = self.backend.conn().execute(
            f"SELECT serial, written_at, written_by FROM {self._s}.states WHERE workspace = %s ORDER BY serial DESC",
            (self.workspace,)).fetchall()
        return [Revision(int(r[0]), r[1].isoformat(), str(r[2])) for r in rows]

    def read_serial(self, serial: int) -> State:
        row = self.backend.conn().execute(
            f"SELECT document FROM {self._s}.states WHERE workspace = %s AND serial = %s",
            (self.workspace, serial)).fetchone()
        if row is None:
            kept = ", ".join(str(r.serial) for r in self.history()) or "none"
            raise StateError(f"serial {serial} of workspace {self.workspace} is not kept", f"Kept serials: {kept}.")
        return parse_state(row[0], f"{self.describe()} serial {serial}")

    # ---- locking ------------------------------------------------------------------------------------

    def _key(self) -> int:
        digest = hashlib.sha256(f"gpuform\0{self.backend.schema_name}\0{self.workspace}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def lock(self, operation: str, timeout: float = 0.0) -> LockInfo:
        self.backend.conn()  # the schema exists before the lock's own session uses it
        conn = _connect(self.backend.url)
        deadline = time.monotonic() + timeout
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key(),)).fetchone()[0]:
            if time.monotonic() >= deadline:
                conn.close()
                held = self.lock_info()
                detail = held.render() if held else "(the holder has not written its details yet)"
                raise StateLocked(f"Error acquiring the state lock: another gpuform operation holds it.\n{detail}",
                                  "Wait for it to finish, or pass -lock-timeout=5m to wait up to 5 minutes.")
            time.sleep(0.2)
        info = new_lock_info(operation, self.describe())
        conn.execute(f"INSERT INTO {self._s}.locks (workspace, info) VALUES (%s, %s) ON CONFLICT (workspace) "
                     "DO UPDATE SET info = excluded.info", (self.workspace, json.dumps(info.__dict__)))
        self._lock_conn, self._lock_id = conn, info.id
        return info

    def unlock(self, lock_id: str) -> None:
        if self._lock_id != lock_id or self._lock_conn is None:
            return
        conn, self._lock_conn, self._lock_id = self._lock_conn, None, None
        try:
            conn.execute(f"DELETE FROM {self._s}.locks WHERE workspace = %s", (self.workspace,))
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._key(),))
        finally:
            conn.close()

    def _held(self) -> bool:
        """Whether a live session holds this workspace's advisory lock (pg_locks splits the key in two)."""
        key = self._key() & 0xFFFFFFFFFFFFFFFF
        row = self.backend.conn().execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = %s "
            "AND objid::bigint = %s AND objsubid = 1", (key >> 32, key & 0xFFFFFFFF)).fetchone()
        return bool(row and row[0])

    def lock_info(self) -> LockInfo | None:
        row = self.backend.conn().execute(f"SELECT info FROM {self._s}.locks WHERE workspace = %s",
                                          (self.workspace,)).fetchone()
        if row is None:
            return None
        try:
            return LockInfo(**json.loads(row[0]))
        except (ValueError, TypeError):
            return None

    def force_unlock(self, lock_id: str) -> None:
        info = self.lock_info()
        if info is None or info.id != lock_id:
            raise StateError(f"no lock with ID {lock_id} is recorded for workspace {self.workspace}",
                             "Copy the ID from the 'Lock Info' of the error that reported the lock.")
        if self._held():
            raise StateError(f"lock {lock_id} is held by a running process ({info.who}, pid {info.pid})",
                             "Stop that process; its lock is released when its database session ends.")
        self.backend.conn().execute(f"DELETE FROM {self._s}.locks WHERE workspace = %s", (self.workspace,))

    # ---- generated secrets and the audit log --------------------------------------------------------

    def _team_key(self) -> str:
        if not self.backend.secrets_key:
            raise StateError("generated secrets (the gateway's admin key, …) live in the postgres backend, sealed "
                             "with the team key, and GPUFORM_SECRETS_KEY is not set",
                             "Export GPUFORM_SECRETS_KEY (the team's key; a teammate or your CI secrets have it).")
        return self.backend.secrets_key

    def secret(self, name: str) -> str | None:
        row = self.backend.conn().execute(
            f"SELECT sealed FROM {self._s}.secrets WHERE workspace = %s AND name = %s",
            (self.workspace, name)).fetchone()
        if row is None:
            return None
        try:
            return unseal(self._team_key(), row[0], f"{self.workspace}/{name}").decode()
        except SealError as exc:
            raise StateError(f"the secret {name} in the backend does not open with GPUFORM_SECRETS_KEY",
                             "Use the team's key (the one the first apply ran with).") from exc

    def put_secret(self, name: str, value: str) -> None:
        sealed = seal(self._team_key(), value.encode(), f"{self.workspace}/{name}")
        self.backend.conn().execute(
            f"INSERT INTO {self._s}.secrets (workspace, name, sealed) VALUES (%s, %s, %s) ON CONFLICT "
            "(workspace, name) DO NOTHING", (self.workspace, name, sealed))

    def secret_names(self) -> list[str]:
        rows = self.backend.conn().execute(f"SELECT name FROM {self._s}.secrets WHERE workspace = %s ORDER BY name",
                                           (self.workspace,)).fetchall()
        return [str(r[0]) for r in rows]

    def record(self, event: AuditEvent) -> None:
        self.backend.conn().execute(
            f"INSERT INTO {self._s}.audit (workspace, who, operation, detail) VALUES (%s, %s, %s, %s)",
            (self.workspace, event.who, event.operation, event.detail))

    def audit(self, limit: int = 100) -> list[AuditEvent]:
        rows = self.backend.conn().execute(
            f"SELECT at, who, operation, detail FROM {self._s}.audit WHERE workspace = %s ORDER BY id DESC LIMIT %s",
            (self.workspace, limit)).fetchall()
        return [AuditEvent(r[0].isoformat(), str(r[1]), str(r[2]), str(r[3])) for r in rows]
