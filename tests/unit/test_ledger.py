"""The GPU-second ledger: a worker is billed from its start request at the price of where it landed, and a
start still in flight never leaves an unpriced row that would hide the worker from the spending cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuform.gateway.metering import Ledger, _day
from gpuform.gateway.sqlite import SQLiteStore
from gpuform.gateway.workers import WorkerRecord
from gpuform.provider import WorkerInfo

pytestmark = pytest.mark.unit

T0 = 1_795_000_000.0  # mid-day UTC, far from midnight


def _worker() -> WorkerRecord:
    return WorkerRecord(id="w1", endpoint="ep", pool="p", revision="r", token_hash="h", requested_at=T0)


def test_seconds_while_the_start_is_in_flight_are_billed_once_the_price_is_known(tmp_path: Path) -> None:
    ledger, worker = Ledger(SQLiteStore(tmp_path / "g.db").ledger), _worker()
    ledger.accrue(worker, T0 + 1)  # a reconcile tick during start_worker: no host, no price yet
    assert ledger.spent("ep", _day(T0)) == 0 and ledger.usage() == []
    worker.info = WorkerInfo("w1", "ep", "localhost", "running", "cpu")
    worker.gpu_type, worker.gpus, worker.price = "cpu", 1, 0.001
    ledger.accrue(worker, T0 + 3)
    ledger.accrue(worker, T0 + 5)
    assert ledger.spent("ep", _day(T0)) == pytest.approx(0.005), "billed from the start request, priced"
    (row,) = ledger.usage()
    assert row["worker_seconds"] == pytest.approx(5) and row["cost"] == pytest.approx(0.005)


def test_an_unknown_price_stays_unknown_never_zero(tmp_path: Path) -> None:
    ledger, worker = Ledger(SQLiteStore(tmp_path / "g.db").ledger), _worker()
    worker.info = WorkerInfo("w1", "ep", "gpu1", "running", "H100-80GB")
    worker.gpu_type, worker.gpus, worker.price = "H100-80GB", 1, None
    ledger.accrue(worker, T0 + 10)
    (row,) = ledger.usage()
    assert row["worker_seconds"] == pytest.approx(10) and row["cost"] is None
