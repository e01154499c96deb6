"""State backends: one contract for each (local, memory), the registry the configuration's ``backend:``
block selects from, and the state format's versions (a state file written by gpuform 0.1.0 is checked in)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuform.engine.operations import workspace
from gpuform.errors import ConfigError, StateError, StateLocked
from gpuform.state.backends import BackendRequest, open_store
from gpuform.state.memory import MemoryStateStore
from gpuform.state.migrations import STATE_VERSION
from gpuform.state.model import Change, PendingOp, ResourceState, State
from gpuform.state.postgres import PostgresBackend
from gpuform.state.store import LocalStateStore, StateStore, locked
from tests.conftest import write_config
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "v1"
BACKENDS: dict[str, Callable[[Path], StateStore]] = {"local": lambda tmp: LocalStateStore(tmp / "state"),
                                                     "memory": lambda tmp: MemoryStateStore()}


@pytest.fixture(params=[*sorted(BACKENDS), pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param != "postgres":
        yield BACKENDS[request.param](tmp_path)
        return
    schema = fresh_schema()
    backend = PostgresBackend(postgres_url(), schema, history=3, secrets_key="team-key")
    yield backend.store("default")
    backend.close()
    drop_schema(schema)


def test_read_write_round_trip_and_serials(store: StateStore) -> None:
    empty = store.read()
    assert empty.serial == 0 and not empty.exists
    state = State()
    state.resources["pool.a"] = ResourceState("pool.a", "pool", "a", "local", {"x": 1})
    store.write(state)
    store.write(state)
    back = store.read()
    assert back.serial == 2 and back.lineage == state.lineage and back.resources["pool.a"].attributes == {"x": 1}


def _res(name: str, x: int) -> ResourceState:
    return ResourceState(f"endpoint.{name}", "endpoint", name, "local", {"x": x})


def test_appended_changes_are_read_back_and_absorbed_by_the_next_write(store: StateStore) -> None:
    state = State()
    state.resources["endpoint.a"] = _res("a", 1)
    store.write(state)
    pending = (PendingOp("endpoint.b", "create", "now"),)
    for change in (Change(2, state.lineage, "endpoint.b", pending),
                   Change(3, state.lineage, "endpoint.b", (), _res("b", 2)),
                   Change(4, state.lineage, "endpoint.a", (), removed=True)):
        store.append(change)
        state.apply_change(change)
        seen = store.read()
        assert seen.serial == change.serial and seen.to_json() == state.to_json()
    assert set(store.read().resources) == {"endpoint.b"} and not store.read().pending
    store.write(state)  # serial 5 absorbs the journal; older changes are never replayed on it again
    store.append(Change(6, state.lineage, "endpoint.c", (), _res("c", 3)))
    back = store.read()
    assert back.serial == 6 and set(back.resources) == {"endpoint.b", "endpoint.c"}


def test_changes_of_another_lineage_or_an_older_serial_are_not_replayed(store: StateStore) -> None:
    state = State()
    store.write(state)
    store.append(Change(2, "another-lineage", "endpoint.x", (), _res("x", 1)))
    assert store.read().serial == 1 and not store.read().resources


def test_a_journal_line_cut_short_by_a_crash_is_ignored_and_dropped_before_the_next(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    state = State()
    store.write(state)
    store.append(Change(2, state.lineage, "endpoint.a", (), _res("a", 1)))
    with open(store.journal, "ab") as fh:
        fh.write(b'{"serial": 3, "lineage": "' + state.lineage.encode() + b'", "addr')  # kill -9 mid-write
    assert store.read().serial == 2
    fresh = LocalStateStore(tmp_path / "state")  # the next process
    fresh.append(Change(3, state.lineage, "endpoint.b", (), _res("b", 2)))
    assert set(fresh.read().resources) == {"endpoint.a", "endpoint.b"}


def test_a_damaged_journal_line_before_the_end_is_an_error_that_names_it(tmp_path: Path) -> None:
    store = LocalStateStore(tmp_path / "state")
    state = State()
    store.write(state)
    store.append(Change(2, state.lineage, "endpoint.a", (), _res("a", 1)))
    store.journal.write_bytes(b"garbage\n" + store.journal.read_bytes())
    with pytest.raises(StateError, match=r"gpuform\.state\.journal:1 is damaged"):
        store.read()


def test_the_lock_is_exclusive_names_its_holder_and_can_be_forced_only_when_free(store: StateStore) -> None:
    info = store.lock("apply")
    assert store.lock_info() is not None and store.lock_info().operation == "apply"  # type: ignore[union-attr]
    outcome: list[BaseException] = []

    def other() -> None:  # another thread stands in for another process (flock is per open file)
        try:
            store.lock("plan", timeout=0.2)
        except StateLocked as exc:
            outcome.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert outcome and "apply" in str(outcome[0])
    with pytest.raises(StateError):
        store.force_unlock("not-the-id")
    store.unlock(info.id)
    with locked(store, "apply", timeout=1) as second:
        assert store.lock_info().id == second.id  # type: ignore[union-attr]


def test_the_registry_selects_a_backend_by_name(tmp_path: Path) -> None:
    local = open_store("local", BackendRequest({"path": "elsewhere"}, tmp_path))
    assert isinstance(local, LocalStateStore) and local.directory == (tmp_path / "elsewhere").resolve()
    overridden = open_store("local", BackendRequest({}, tmp_path, tmp_path / "flag"))
    assert isinstance(overridden, LocalStateStore) and overridden.directory == (tmp_path / "flag").resolve()
    assert open_store("memory", BackendRequest({"name": "x"}, tmp_path)) is open_store(
        "memory", BackendRequest({"name": "x"}, tmp_path))
    with pytest.raises(StateError, match='unknown state backend "s3"'):
        open_store("s3", BackendRequest({}, tmp_path))


def test_the_backend_block_of_the_configuration_chooses_where_state_lives(tmp_path: Path) -> None:
    write_config(tmp_path, "backend: {type: local, path: .gpuform/state}\n")
    ws = workspace(tmp_path)
    assert ws.store.describe() == str(tmp_path / ".gpuform" / "state" / "gpuform.state.json")
    assert ws.state_dir == tmp_path / ".gpuform" / "state"
    write_config(tmp_path, "backend: {type: s3}\n")
    with pytest.raises(ConfigError) as info:
        workspace(tmp_path)
    (diag,) = info.value.diagnostics
    assert "gpuform.yaml:1" in str(diag.source) and "type" in diag.summary
    write_config(tmp_path, "backend: {type: postgres}\n")
    with pytest.raises(StateError, match="needs a URL") as missing:
        workspace(tmp_path)
    assert "GPUFORM_BACKEND_URL" in missing.value.hint


def test_a_state_file_written_by_gpuform_0_1_0_is_upgraded(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    shutil.copy(FIXTURES / "gpuform.state.json", directory / "gpuform.state.json")
    old = json.loads((directory / "gpuform.state.json").read_text())
    assert old["version"] == 1 and isinstance(old["outputs"]["gateway_url"], str)
    store = LocalStateStore(directory)
    state = store.read()
    assert state.lineage == old["lineage"] and state.serial == old["serial"]
    assert state.outputs["gateway_url"] == {"value": old["outputs"]["gateway_url"], "type": "string",
                                            "sensitive": False}
    assert set(state.resources) == {r["address"] for r in old["resources"]}
    store.write(state)
    saved = json.loads((directory / "gpuform.state.json").read_text())
    assert saved["version"] == STATE_VERSION and saved["serial"] == old["serial"] + 1
    assert json.loads((directory / "gpuform.state.json.backup").read_text())["version"] == 1, "the old one kept"


def test_runtime_status_never_survives_in_state() -> None:
    from gpuform.state.migrations import upgrade

    doc = {"version": 1, "serial": 3, "lineage": "L", "outputs": {},
           "resources": [{"address": "endpoint.e", "kind": "endpoint", "name": "e", "provider": "local",
                          "computed": {"status": {"workers": 3}, "image": "x"}}]}
    assert upgrade(doc, "s")["resources"][0]["computed"] == {"image": "x"}


@pytest.mark.parametrize(("change", "message"), [
    ({"version": STATE_VERSION + 1}, "newer gpuform"), ({"version": "2"}, "not a positive integer"),
    ({"version": 1.5}, "not a positive integer"), ({"serial": -1}, "whole number"),
    ({"serial": "7"}, "whole number"), ({"resources": [{"address": "x"}]}, "is damaged"),
])
def test_a_state_file_with_a_bad_version_or_serial_is_a_state_error(tmp_path: Path, change: dict[str, object],
                                                                     message: str) -> None:
    doc = json.loads((FIXTURES / "gpuform.state.json").read_text()) | change
    store = LocalStateStore(tmp_path)
    store.path.write_text(json.dumps(doc))
    with pytest.raises(StateError, match=message):
        store.read()
