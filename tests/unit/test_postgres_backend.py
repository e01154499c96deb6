"""The postgres state backend on the tests' PostgreSQL: history, workspaces, sealed secrets, the audit log,
and advisory locks that name their holder and die with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gpuform.errors import StateError, StateLocked
from gpuform.state.model import ResourceState, State
from gpuform.state.postgres import PostgresBackend
from gpuform.state.store import audit_event, locked
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = [pytest.mark.unit, pytest.mark.postgres]


@pytest.fixture
def backend() -> Iterator[PostgresBackend]:
    schema = fresh_schema()
    made = PostgresBackend(postgres_url(), schema, history=3, secrets_key="team-key")
    yield made
    made.close()
    drop_schema(schema)


def test_the_last_serials_are_kept_and_readable(backend: PostgresBackend) -> None:
    store = backend.store("default")
    state = State()
    for value in range(5):
        state.resources["pool.a"] = ResourceState("pool.a", "pool", "a", "local", {"x": value})
        store.write(state)
    assert [r.serial for r in store.history()] == [5, 4, 3]
    assert store.read_serial(4).resources["pool.a"].attributes == {"x": 3}
    with pytest.raises(StateError, match=r"serial 1 .* is not kept"):
        store.read_serial(1)
    stale = store.read_serial(4)
    stale.serial = 4  # a second writer that did not hold the lock
    with pytest.raises(StateError, match="written by someone else"):
        store.write(stale)


def test_workspaces_hold_separate_states(backend: PostgresBackend) -> None:
    dev, prod = backend.store("dev"), backend.store("prod")
    dev.write(State())
    production = State()
    prod.write(production)
    prod.write(production)
    assert backend.workspaces() == ["default", "dev", "prod"]
    assert dev.read().serial == 1 and prod.read().serial == 2 and dev.read().lineage != prod.read().lineage
    backend.delete_workspace("dev")
    assert backend.workspaces() == ["default", "prod"] and not backend.store("dev").read().exists


def test_generated_secrets_are_sealed_with_the_team_key(backend: PostgresBackend) -> None:
    store = backend.store("default")
    store.put_secret("gateway.main.admin_key", "gpf_admin_secret")
    store.put_secret("gateway.main.admin_key", "a second writer loses")
    assert store.secret("gateway.main.admin_key") == "gpf_admin_secret"
    raw = backend.conn().execute(f"SELECT sealed FROM {backend.schema}.secrets").fetchone()[0]
    assert "gpf_admin_secret" not in raw and raw.startswith("v1:")
    wrong = PostgresBackend(postgres_url(), backend.schema_name, secrets_key="another key")
    with pytest.raises(StateError, match="does not open with GPUFORM_SECRETS_KEY"):
        wrong.store("default").secret("gateway.main.admin_key")
    keyless = PostgresBackend(postgres_url(), backend.schema_name)
    with pytest.raises(StateError, match="GPUFORM_SECRETS_KEY is not set"):
        keyless.store("default").secret("gateway.main.admin_key")
    wrong.close()
    keyless.close()


def test_the_audit_log_records_who_did_what(backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFORM_ACTOR", "octocat (GitHub Actions)")
    store = backend.store("default")
    store.record(audit_event("apply", "2 added"))
    store.record(audit_event("state rm", "endpoint.x"))
    (last, first) = store.audit()
    assert (last.operation, last.who, first.detail) == ("state rm", "octocat (GitHub Actions)", "2 added")


HOLD = """
import sys, time
from gpuform.state.postgres import PostgresBackend
store = PostgresBackend(sys.argv[1], sys.argv[2]).store("default")
store.lock("apply")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_lock_names_its_holder_and_dies_with_it(backend: PostgresBackend) -> None:
    store = backend.store("default")
    store.read()  # creates the schema
    holder = subprocess.Popen([sys.executable, "-c", HOLD, postgres_url(), backend.schema_name],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(StateLocked) as info:
            store.lock("plan", timeout=1.0)
        assert time.monotonic() - started >= 1.0 and "Operation: apply" in str(info.value)
        assert f"pid {holder.pid}" in str(info.value)
        recorded = store.lock_info()
        assert recorded is not None
        with pytest.raises(StateError, match="held by a running process"):
            store.force_unlock(recorded.id)
        os.kill(holder.pid, signal.SIGKILL)  # its session ends: the advisory lock goes with it
        holder.wait()
        with locked(store, "apply", timeout=10) as mine:
            assert store.lock_info().id == mine.id  # type: ignore[union-attr]
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_record_can_be_forced_away(backend: PostgresBackend) -> None:
    store = backend.store("default")
    info = store.lock("apply")
    assert store._lock_conn is not None
    store._lock_conn.close()  # the session ends, the record stays behind (as after a crash)
    store._lock_conn, store._lock_id = None, None
    deadline = time.monotonic() + 10
    while store._held() and time.monotonic() < deadline:  # the server ends the session a moment later
        time.sleep(0.05)
    store.force_unlock(info.id)
    assert store.lock_info() is None
    with locked(store, "apply"):
        pass


def test_projects_sharing_a_database_lock_independently(backend: PostgresBackend) -> None:
    other = PostgresBackend(postgres_url(), fresh_schema())
    try:
        with locked(backend.store("default"), "apply"), locked(other.store("default"), "apply"):
            pass
    finally:
        other.close()
        drop_schema(other.schema_name)
