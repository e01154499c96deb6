"""State storage. :class:`StateStore` is the interface every backend implements (see
:mod:`gpuform.state.backends` for the registry); :class:`LocalStateStore` keeps files on disk.

The local store writes atomically (temporary file, fsync, rename), keeps the previous serial as
``gpuform.state.json.backup`` (hard-linked before the rename, so a state file always exists), and locks
with ``flock`` on a lock file that also records the holder (pid, host, operation, time). A process killed
with -9 releases its flock, so its lock never goes stale on this host.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gpuform import __version__, faults
from gpuform.errors import StateError, StateLocked
from gpuform.state.migrations import upgrade
from gpuform.state.model import Change, State

STATE_FILE = "gpuform.state.json"
JOURNAL_FILE = "gpuform.state.journal"
LOCK_FILE = ".gpuform.lock"


@dataclass(frozen=True)
class LockInfo:
    id: str
    operation: str
    who: str
    pid: int
    host: str
    created: str
    path: str
    version: str = __version__

    def render(self) -> str:
        return (f"Lock Info:\n  ID:        {self.id}\n  Path:      {self.path}\n"
                f"  Operation: {self.operation}\n  Who:       {self.who} (pid {self.pid} on {self.host})\n"
                f"  Version:   {self.version}\n  Created:   {self.created}")


class StateStore(Protocol):
    """Where state lives. Obligations (``tests/unit/test_state_backends.py`` checks each backend):

    - ``read`` returns the saved state (migrated to the current format in memory) with every change
      appended since it was written replayed on it, or an empty one;
    - ``write`` bumps the serial and replaces the state atomically: a reader sees the old or the new;
    - ``append`` durably records one :class:`~gpuform.state.model.Change` (the serial after the last one
      written or appended) without rewriting the state: an apply saves each resource in O(its size), and a
      process killed mid-append leaves a state that reads as it was before that change;
    - ``lock`` is exclusive across processes, waits up to ``timeout`` and then raises
      :class:`~gpuform.errors.StateLocked` carrying the holder's :class:`LockInfo`; a holder that dies
      releases it; ``unlock`` releases the lock ``lock`` returned;
    - ``force_unlock`` clears a lock left by a holder that can no longer release it, never a live one.
    """

    def read(self) -> State: ...

    def write(self, state: State) -> None: ...

    def append(self, change: Change) -> None: ...

    def lock(self, operation: str, timeout: float = 0.0) -> LockInfo: ...

    def unlock(self, lock_id: str) -> None: ...

    def lock_info(self) -> LockInfo | None: ...

    def force_unlock(self, lock_id: str) -> None: ...

    def describe(self) -> str: ...

    def history(self) -> list[Revision]:
        """The serials kept, newest first."""
        ...

    def read_serial(self, serial: int) -> State: ...

    def secret(self, name: str) -> str | None:
        """A generated secret kept with the state (None: none yet)."""
        ...

    def put_secret(self, name: str, value: str) -> None:
        """Keep a generated secret (a second writer keeps the first value: read it back)."""
        ...

    def secret_names(self) -> list[str]: ...

    def record(self, event: AuditEvent) -> None: ...

    def audit(self, limit: int = 100) -> list[AuditEvent]: ...


@dataclass(frozen=True)
class Revision:
    """One kept serial of a state."""

    serial: int
    written_at: str
    written_by: str


@dataclass(frozen=True)
class AuditEvent:
    """Who changed what, when (``gpuform state audit``)."""

    at: str
    who: str
    operation: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"at": self.at, "who": self.who, "operation": self.operation, "detail": self.detail}


@contextlib.contextmanager
def locked(store: StateStore, operation: str, timeout: float = 0.0) -> Iterator[LockInfo]:
    """Hold ``store``'s lock for the duration of a ``with`` block."""
    info = store.lock(operation, timeout)
    try:
        yield info
    finally:
        store.unlock(info.id)


class LocalStateStore:
    """State in ``DIRECTORY/gpuform.state.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self.backup = directory / (STATE_FILE + ".backup")
        self.journal = directory / JOURNAL_FILE
        self.lock_path = directory / LOCK_FILE
        self._held: dict[str, int] = {}  # lock id -> the open file that holds the flock
        self._journal_checked = False

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> State:
        """The saved state, or an empty one (serial 0, fresh lineage) when none was saved."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror}", "Check its permissions.") from exc
        state = parse_state(raw, str(self.path))
        try:
            lines = self.journal.read_bytes().split(b"\n")
        except FileNotFoundError:
            return state
        replay(state, lines, str(self.journal))
        return state

    def write(self, state: State) -> None:
        """Bump the serial and replace the state file atomically, keeping the previous one as backup."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        state.serial += 1
        text = json.dumps(state.to_json(), indent=2, sort_keys=False) + "\n"
        faults.point("before-state-write")
        tmp = self.directory / f".{STATE_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if self.path.exists():
            link = self.directory / f".{STATE_FILE}.backup.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.link(self.path, link)
            os.replace(link, self.backup)
        os.replace(tmp, self.path)
        _fsync_dir(self.directory)
        if self.journal.exists():
            os.truncate(self.journal, 0)  # its changes are in the state now (and would be skipped: older serials)
        faults.point("after-state-write")

    def append(self, change: Change) -> None:
        """Append ``change`` as one JSON line to the journal beside the state file, fsynced."""
        line = (json.dumps(change.to_json()) + "\n").encode()
        faults.point("before-journal-append")
        fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if not self._journal_checked:
                _drop_torn_tail(fd)  # a line cut short by a crash would swallow the next one
                self._journal_checked = True
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        faults.point("after-journal-append")

    def history(self) -> list[Revision]:
        """The local backend keeps the current serial and the one before it (``.backup``)."""
        out = []
        for path in (self.path, self.backup):
            with contextlib.suppress(OSError, StateError):
                state = parse_state(path.read_text(encoding="utf-8"), str(path))
                stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
                out.append(Revision(state.serial, stamp, ""))
        return out

    def read_serial(self, serial: int) -> State:
        for path in (self.path, self.backup):
            with contextlib.suppress(OSError):
                state = parse_state(path.read_text(encoding="utf-8"), str(path))
                if state.serial == serial:
                    return state
        kept = ", ".join(str(r.serial) for r in self.history()) or "none"
        raise StateError(f"serial {serial} is not kept in {self.directory}", f"Kept serials: {kept} (the local "
                         "backend keeps two; the postgres backend keeps the last 20).")

    @property
    def secrets_dir(self) -> Path:
        return self.directory / "secrets"

    def secret_path(self, name: str) -> Path:
        """The file that holds the secret ``name`` (it may not exist yet)."""
        return self.secrets_dir / name

    def secret(self, name: str) -> str | None:
        path = self.secret_path(name)
        return path.read_text(encoding="utf-8").strip() if path.exists() else None

    def secret_names(self) -> list[str]:
        directory = self.secrets_dir
        return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".tmp")) if directory.is_dir() else []

    def put_secret(self, name: str, value: str) -> None:
        self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.secret_path(name)
        if path.exists():
            return
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value)
        tmp.replace(path)

    def record(self, event: AuditEvent) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / "audit.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event.to_json()) + "\n")

    def audit(self, limit: int = 100) -> list[AuditEvent]:
        try:
            lines = (self.directory / "audit.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        return [AuditEvent(**json.loads(line)) for line in reversed(lines[-limit:]) if line.strip()]

    def lock(self, operation: str, timeout: float = 0.0) -> LockInfo:
        """Take the exclusive lock; raise StateLocked (with the holder's info) after ``timeout`` seconds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._acquire(fd, timeout)
            info = new_lock_info(operation, str(self.path))
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info.__dict__).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._held[info.id] = fd
        return info

    def unlock(self, lock_id: str) -> None:
        fd = self._held.pop(lock_id, None)
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = self.lock_info()
                    detail = held.render() if held else "(the holder has not written its details yet)"
                    raise StateLocked(
                        f"Error acquiring the state lock: another gpuform operation holds it.\n{detail}",
                        "Wait for it to finish, or pass --lock-timeout 300 to wait up to 5 minutes.") from None
                time.sleep(0.1)

    def lock_info(self) -> LockInfo | None:
        try:
            raw = self.lock_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not raw.strip():
            return None
        try:
            return LockInfo(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def is_locked(self) -> bool:
        """Whether a live process holds the lock."""
        if not self.lock_path.exists():
            return False
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return False

    def force_unlock(self, lock_id: str) -> None:
        """Clear the lock record ``lock_id``. A lock held by a live process cannot be broken here."""
        info = self.lock_info()
        if info is None or info.id != lock_id:
            raise StateError(f"no lock with ID {lock_id} is recorded in {self.lock_path}",
                             "Copy the ID from the 'Lock Info' of the error that reported the lock.")
        if self.is_locked():
            raise StateError(f"lock {lock_id} is held by a running process (pid {info.pid} on {info.host})",
                             f"Stop that process first (kill {info.pid}); its lock is released when it exits.")
        self.lock_path.write_text("", encoding="utf-8")


def parse_state(raw: str, where: str) -> State:
    """A state document from its JSON text, migrated to the current format; StateError when it is not one."""
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        raise StateError(f"{where} is not valid JSON ({exc})",
                         f"Restore it from {where}.backup, or fix it by hand.") from exc
    if not isinstance(data, dict) or "lineage" not in data or "serial" not in data:
        raise StateError(f"{where} is not a gpuform state file", "Restore it from its .backup copy.")
    try:
        data = upgrade(data, where)
        return State.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{where} is damaged: {exc!r}", "Restore it from its .backup copy.") from exc


def replay(state: State, lines: list[bytes], where: str) -> None:
    """Apply the journal's changes that follow ``state`` (older ones, already in the state, are skipped).
    Only the last line may be cut short (a crash while appending): it is ignored."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            change = Change.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            if all(not rest.strip() for rest in lines[number:]):
                return  # the torn last line of an append a crash interrupted
            raise StateError(f"{where}:{number} is damaged ({exc!r})",
                             "Remove that line and the ones after it (the changes they record are lost; "
                             "run `gpuform plan` to see what refresh finds).") from exc
        if change.follows(state):
            state.apply_change(change)


def _drop_torn_tail(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, data.rfind(b"\n") + 1)


def new_lock_info(operation: str, path: str) -> LockInfo:
    return LockInfo(id=str(uuid.uuid4()), operation=operation, who=who_am_i(), pid=os.getpid(),
                    host=socket.gethostname(), created=datetime.now(UTC).isoformat(), path=path)


def who_am_i() -> str:
    """Who runs gpuform: ``GPUFORM_ACTOR`` (CI sets it to the person behind the run), else user@host."""
    actor = os.environ.get("GPUFORM_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def audit_event(operation: str, detail: str = "") -> AuditEvent:
    return AuditEvent(datetime.now(UTC).isoformat(), who_am_i(), operation, detail)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
