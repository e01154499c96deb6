"""The gateway store: one contract for every implementation (SQLite, and PostgreSQL in a schema of its own per
test), and versioned migrations (a SQLite database written by gpuform 0.1.0 is checked in and upgraded in
place; a store from a newer gpuform is refused)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuform.errors import StoreError
from gpuform.gateway import postgres
from gpuform.gateway.jobs import Job
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.sqlite import SCHEMA_VERSION, SQLiteStore
from gpuform.gateway.states import JobStatus, WorkerState
from gpuform.gateway.store import GatewayStore, HistoryEntry, HistoryQuery, LedgerEntry, StoredEndpoint
from gpuform.gateway.workers import WorkerRecord
from tests.gateway_harness import endpoint_spec
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "v1"
STORES: dict[str, Callable[[Path], GatewayStore]] = {"sqlite": lambda tmp: SQLiteStore(tmp / "gateway.db"),
                                                     "sqlite-memory": lambda tmp: SQLiteStore(":memory:")}
VERSIONS = {SQLiteStore: SCHEMA_VERSION, PostgresStore: postgres.SCHEMA_VERSION}


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A schema of its own for one test on the tests' PostgreSQL, dropped afterwards."""
    url, schema = postgres_url(), fresh_schema()
    assert url
    yield schema
    drop_schema(schema)


@pytest.fixture(params=[*sorted(STORES), pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayStore]:
    if request.param == "postgres":
        made: GatewayStore = PostgresStore(postgres_url(), request.getfixturevalue("pg_schema"))
    else:
        made = STORES[request.param](tmp_path)
    yield made
    made.close()


def _job(job_id: str, created: float = 100.0, **fields: object) -> Job:
    return Job(id=job_id, endpoint="ep", input={"n": job_id}, created_at=created, execution_timeout=60, ttl=600,
               **fields)  # type: ignore[arg-type]


def test_jobs_round_trip_through_their_lifecycle(store: GatewayStore) -> None:
    job = _job("a", idempotency_key="k")
    store.jobs.insert(job)
    job_b = _job("b", idempotency_key="k", owner="other")
    store.jobs.insert(job_b)
    assert store.jobs.by_idempotency("ep", None, "k").id == "a"  # type: ignore[union-attr]
    assert store.jobs.by_idempotency("ep", "other", "k").id == "b"  # type: ignore[union-attr]
    assert store.jobs.by_idempotency("ep", None, "x") is None
    store.jobs.delete(["b"])
    job.status, job.started_at, job.attempts, job.worker_id = JobStatus.IN_PROGRESS, 101.0, 1, "w1"
    store.jobs.started([job])
    assert [j.id for j in store.jobs.open_jobs()] == ["a"]
    job.status, job.output, job.completed_at, job.expires_at = JobStatus.COMPLETED, {"ok": 1}, 102.0, 200.0
    store.jobs.finished(job)
    got = store.jobs.get("a")
    assert got is not None and got.status == JobStatus.COMPLETED and got.output == {"ok": 1} and got.worker_id == "w1"
    assert store.jobs.open_jobs() == [] and store.jobs.counts("ep")["COMPLETED"] == 1
    assert store.jobs.expired(150.0, 10) == [] and store.jobs.expired(250.0, 10) == ["a"]
    store.jobs.delete(["a"])
    assert store.jobs.get("a") is None


def test_expiry_and_ttl_queries_return_batches_oldest_first(store: GatewayStore) -> None:
    for i in range(5):
        job = _job(f"j{i}", created=float(i))
        store.jobs.insert(job)
        job.status, job.completed_at, job.expires_at = JobStatus.COMPLETED, 1.0, 10.0 + i
        store.jobs.finished(job)
    store.jobs.insert(_job("open", created=0.0))
    assert store.jobs.expired(100.0, 3) == ["j0", "j1", "j2"]
    assert store.jobs.ttl_expired(700.0, 10) == ["open"] and store.jobs.ttl_expired(500.0, 10) == []


def test_workers_ledger_endpoints_and_meta(store: GatewayStore) -> None:
    worker = WorkerRecord(id="w1", endpoint="ep", pool="p", revision="r1", token_hash="h", requested_at=1.0,
                          host="h1", gpu_type="H100-80GB", gpus=1, price=0.5)
    worker.move(WorkerState.IDLE, 2.0)
    store.workers.save(worker)
    (back,) = store.workers.live()
    assert (back.id, back.state, back.host, back.info is not None) == ("w1", WorkerState.IDLE, "h1", True)
    worker.move(WorkerState.STOPPING, 3.0)
    worker.move(WorkerState.STOPPED, 4.0)
    store.workers.save(worker)
    assert store.workers.live() == [] and store.workers.recent("ep")[0]["state"] == "stopped"
    store.ledger.add(LedgerEntry("w1", "ep", "2026-11-29", "H100-80GB", 1, 10.0, 5.0))
    store.ledger.add(LedgerEntry("w1", "ep", "2026-11-29", "H100-80GB", 1, 2.0, 1.0))
    assert store.ledger.spent("ep", "2026-11-29") == 6.0 and store.ledger.worker_seconds("w1") == 12.0
    store.ledger.add(LedgerEntry("w1", "ep", "2026-11-29", "H100-80GB", 1, 1.0, None))
    assert store.ledger.usage()[0]["cost"] is None, "an unknown price makes the total unknown, never zero"
    spec = endpoint_spec()
    store.endpoints.put("ep", StoredEndpoint(spec, {"SECRET": "s"}, "rev1"))
    assert store.endpoints.all()["ep"] == StoredEndpoint(spec, {"SECRET": "s"}, "rev1")
    store.endpoints.delete("ep")
    assert store.endpoints.all() == {}
    store.set_meta("lineage", "L")
    assert store.get_meta("lineage") == "L" and store.get_meta("nope") is None
    assert store.schema_version() == VERSIONS[type(store)]


def _entry(job_id: str, created: float, status: JobStatus = JobStatus.COMPLETED, owner: str | None = "app",
           endpoint: str = "ep", started: float | None = None) -> HistoryEntry:
    start = created + 1 if started is None else started
    return HistoryEntry(job_id, endpoint, owner, status, "w1" if status != JobStatus.CANCELLED else None, created,
                        start if status != JobStatus.CANCELLED else None, created + 3)


def test_request_history_filters_by_key_status_and_arrival_newest_first(store: GatewayStore) -> None:
    store.history.add(_entry("a", 10.0))
    store.history.add(_entry("b", 20.0, JobStatus.FAILED, owner="other"))
    store.history.add(_entry("c", 30.0, JobStatus.CANCELLED))
    store.history.add(_entry("d", 40.0, endpoint="ep2"))
    ids = [e.job_id for e in store.history.query(HistoryQuery("ep"))]
    assert ids == ["c", "b", "a"], "one endpoint's rows, newest arrival first"
    assert [e.job_id for e in store.history.query(HistoryQuery(None))] == ["d", "c", "b", "a"], "every endpoint's"
    assert [e.job_id for e in store.history.query(HistoryQuery(None, since=25.0))] == ["d", "c"]
    assert [e.job_id for e in store.history.query(HistoryQuery("ep", owner="app"))] == ["c", "a"]
    failed = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
    assert [e.job_id for e in store.history.query(HistoryQuery("ep", statuses=failed))] == ["c", "b"]
    assert [e.job_id for e in store.history.query(HistoryQuery("ep", since=20.0, limit=1))] == ["c"]
    (cancelled,) = store.history.query(HistoryQuery("ep", statuses=frozenset({JobStatus.CANCELLED})))
    assert (cancelled.worker_id, cancelled.started_at, cancelled.execution, cancelled.delay) == (None, None, None, 3.0)
    (done,) = store.history.query(HistoryQuery("ep", owner="app", statuses=frozenset({JobStatus.COMPLETED})))
    assert done == _entry("a", 10.0) and (done.delay, done.execution) == (1.0, 2.0)


def test_request_history_keeps_a_retried_jobs_latest_run_and_prunes_oldest_first(store: GatewayStore) -> None:
    store.history.add(_entry("a", 10.0, JobStatus.FAILED))
    store.history.add(_entry("a", 50.0))
    (row,) = store.history.query(HistoryQuery("ep"))
    assert (row.status, row.created_at) == (JobStatus.COMPLETED, 50.0)
    for i in range(5):
        store.history.add(_entry(f"old{i}", float(i)))  # completed at i + 3
    assert store.history.prune(7.0, 2) == 2, "a batch at a time"
    assert store.history.prune(7.0, 10) == 2 and store.history.prune(7.0, 10) == 0
    assert sorted(e.job_id for e in store.history.query(HistoryQuery("ep"))) == ["a", "old4"]


def test_request_history_outlives_the_jobs_result(store: GatewayStore) -> None:
    job = _job("gone", status=JobStatus.COMPLETED, completed_at=103.0, started_at=101.0, worker_id="w1")
    store.jobs.insert(job)
    store.history.add(HistoryEntry.of(job))
    store.jobs.delete(["gone"])
    (row,) = store.history.query(HistoryQuery("ep"))
    assert store.jobs.get("gone") is None and (row.job_id, row.delay, row.execution) == ("gone", 1.0, 2.0)


def test_a_database_written_by_gpuform_0_1_0_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    shutil.copy(FIXTURES / "gateway.db", path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "chunks" in tables
    store = SQLiteStore(path)
    assert store.migrated_from == 1 and store.schema_version() == SCHEMA_VERSION
    endpoints = store.endpoints.all()
    assert list(endpoints) == ["echo"] and endpoints["echo"].spec.worker.env == {"MODE": "fast"}
    statuses = sorted(j.status for j in [store.jobs.get(r[0]) for r in store.conn.execute("SELECT id FROM jobs")]
                      if j is not None)
    assert statuses == ["COMPLETED", "COMPLETED"]
    assert store.ledger.usage()[0]["worker_seconds"] > 0
    store.close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    assert "chunks" not in tables and "client_key" not in columns
    again = SQLiteStore(path)
    assert again.migrated_from == SCHEMA_VERSION, "nothing left to migrate"
    again.close()


def test_a_database_from_a_newer_gpuform_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this gpuform knows") as info:
        SQLiteStore(path)
    assert "newer gpuform" in info.value.hint


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the gateway database"):
        SQLiteStore(path)


def test_ledger_rows_are_listed_and_a_hand_over_adds_only_the_rows_missing(store: GatewayStore) -> None:
    store.ledger.add(LedgerEntry("w1", "ep", "2026-11-29", "cpu", 1, 10.0, 1.0))
    handed = [LedgerEntry("w1", "ep", "2026-11-29", "cpu", 1, 99.0, 9.0),
              LedgerEntry("w0", "ep", "2026-11-28", "H100-80GB", 2, 30.0, None)]
    assert store.ledger.restore(handed) == 1 and store.ledger.restore(handed) == 0
    assert sorted(store.ledger.entries(), key=lambda e: e.day) == [handed[1], LedgerEntry(
        "w1", "ep", "2026-11-29", "cpu", 1, 10.0, 1.0)]
