"""The local state store: atomic writes, a backup of the previous serial, a lock that names its holder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuform.errors import StateError, StateLocked
from gpuform.state.model import ResourceState, State
from gpuform.state.store import LocalStateStore, locked

pytestmark = pytest.mark.unit


def test_missing_state_reads_as_empty_with_a_fresh_lineage(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path)
    a, b = store.read(), store.read()
    assert a.serial == 0 and not a.exists and a.lineage != b.lineage


def test_each_write_bumps_the_serial_and_keeps_the_previous_as_backup(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path)
    state = State()
    state.resources["pool.a"] = ResourceState("pool.a", "pool", "a", "local", {"x": 1})
    store.write(state)
    state.resources["pool.a"].attributes["x"] = 2
    store.write(state)
    assert store.read().serial == 2 and store.read().resources["pool.a"].attributes == {"x": 2}
    backup = json.loads(store.backup.read_text())
    assert backup["serial"] == 1 and backup["resources"][0]["attributes"] == {"x": 1}
    assert backup["lineage"] == state.lineage
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_damaged_state_is_an_error_that_points_at_the_backup(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(StateError, match="not valid JSON") as info:
        store.read()
    assert ".backup" in info.value.hint


HOLD = """
import sys, time
from pathlib import Path
from gpuform.state.store import LocalStateStore, locked
with locked(LocalStateStore(Path(sys.argv[1])), "apply"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_locker_fails_at_once_with_the_holders_info(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(StateLocked) as info, locked(LocalStateStore(tmp_path), "apply"):
            pass
        assert time.monotonic() - started < 1.0
        text = str(info.value)
        assert f"pid {holder.pid}" in text and "Operation: apply" in text and "ID:" in text
        assert "--lock-timeout" in info.value.hint
    finally:
        holder.kill()
        holder.wait()


def test_lock_timeout_waits_for_the_holder(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 1.0)
    started = time.monotonic()
    with locked(LocalStateStore(tmp_path), "apply", timeout=20):
        waited = time.monotonic() - started
    holder.wait()
    assert 0.5 < waited < 10


def test_a_holder_killed_with_sigkill_does_not_leave_a_stale_lock(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    store = LocalStateStore(tmp_path)
    assert not store.is_locked()
    with locked(store, "apply"):
        assert store.is_locked()


def test_force_unlock_clears_a_dead_holders_record_but_not_a_live_lock(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 30)
    store = LocalStateStore(tmp_path)
    info = store.lock_info()
    assert info is not None and info.pid == holder.pid
    with pytest.raises(StateError, match="held by a running process"):
        store.force_unlock(info.id)
    with pytest.raises(StateError, match="no lock with ID"):
        store.force_unlock("not-the-id")
    holder.kill()
    holder.wait()
    store.force_unlock(info.id)
    assert store.lock_info() is None
