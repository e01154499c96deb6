"""An in-memory state store for tests: the same obligations as the others, in one process.

Documents round-trip through JSON (so a test sees what a real backend would keep), and the lock behaves
like the others': exclusive, waits up to its timeout, then names the holder.
"""

from __future__ import annotations

import json
import threading
import time

from gpuform.errors import StateError, StateLocked
from gpuform.state.model import Change, State
from gpuform.state.store import AuditEvent, LockInfo, Revision, new_lock_info, parse_state, replay


class MemoryStateStore:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.document: str | None = None
        self.documents: list[str] = []
        self.journal: list[bytes] = []
        self.secrets: dict[str, str] = {}
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()
        self._holder: LockInfo | None = None

    def describe(self) -> str:
        return f"memory:{self.name}"

    def read(self) -> State:
        if self.document is None:
            return State()
        state = parse_state(self.document, self.describe())
        replay(state, self.journal, self.describe())
        return state

    def write(self, state: State) -> None:
        state.serial += 1
        self.document = json.dumps(state.to_json())
        self.documents.append(self.document)
        self.journal.clear()

    def append(self, change: Change) -> None:
        self.journal.append(json.dumps(change.to_json()).encode())

    def lock(self, operation: str, timeout: float = 0.0) -> LockInfo:
        acquired = self._lock.acquire(timeout=timeout) if timeout > 0 else self._lock.acquire(blocking=False)
        if not acquired:
            detail = self._holder.render() if self._holder else ""
            raise StateLocked(f"Error acquiring the state lock: another gpuform operation holds it.\n{detail}",
                              "Wait for it to finish, or pass --lock-timeout to wait.")
        self._holder = new_lock_info(operation, self.describe())
        return self._holder

    def unlock(self, lock_id: str) -> None:
        if self._holder is not None and self._holder.id == lock_id:
            self._holder = None
            self._lock.release()

    def lock_info(self) -> LockInfo | None:
        return self._holder

    def force_unlock(self, lock_id: str) -> None:
        if self._holder is None or self._holder.id != lock_id:
            raise StateError(f"no lock with ID {lock_id} is held in {self.describe()}",
                             "Copy the ID from the 'Lock Info' of the error that reported the lock.")
        self.unlock(lock_id)

    def history(self) -> list[Revision]:
        return [Revision(json.loads(d)["serial"], "", "") for d in reversed(self.documents)]

    def read_serial(self, serial: int) -> State:
        for document in self.documents:
            if json.loads(document)["serial"] == serial:
                return parse_state(document, self.describe())
        raise StateError(f"serial {serial} is not kept in {self.describe()}", "See `gpuform state list --history`.")

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def put_secret(self, name: str, value: str) -> None:
        self.secrets.setdefault(name, value)

    def secret_names(self) -> list[str]:
        return sorted(self.secrets)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def audit(self, limit: int = 100) -> list[AuditEvent]:
        return list(reversed(self.events))[:limit]

    def wait_unlocked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._holder is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._holder is None
