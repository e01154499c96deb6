"""The GPU-second ledger: every worker's billed seconds × its price, per endpoint and UTC day.

Billing follows RunPod: from the moment the gateway asks for a worker until it has stopped, including
start-up and the idle-timeout window. Seconds are accrued at every reconcile tick and at stop, split at
UTC midnight, so the ledger and the spending cap see spend as it happens.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from gpuform.gateway.store import LedgerEntry, LedgerRows
from gpuform.gateway.workers import WorkerRecord


def price_per_second(prices: dict[str, float], gpu_type: str, gpus: int) -> float | None:
    """Whole-worker price per second, or None when the pool has no price for the type."""
    price = prices.get(gpu_type or "cpu")
    return None if price is None else float(price) * max(1, gpus)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _split_by_day(start: float, end: float) -> list[tuple[str, float]]:
    parts: list[tuple[str, float]] = []
    while start < end:
        midnight = (datetime.fromtimestamp(start, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                    + timedelta(days=1)).timestamp()
        cut = min(end, midnight)
        parts.append((_day(start), cut - start))
        start = cut
    return parts


Accrued = Callable[[LedgerEntry], None]


@runtime_checkable
class SettledLedgerRows(Protocol):
    """Ledger rows that replicas share (PostgreSQL): seconds are added together with the worker's billed-until
    mark, only when it still stands where this replica read it, so no second is counted twice or dropped
    when accrual moves from one replica to another."""

    def settle(self, worker_id: str, start: float, until: float, entries: list[LedgerEntry]) -> float: ...


class Ledger:
    """Accrues workers' billed seconds into :class:`~gpuform.gateway.store.LedgerRows`; ``on_accrue`` hears
    of every row added (the metrics' GPU-seconds and cost counters)."""

    def __init__(self, rows: LedgerRows, on_accrue: Accrued | None = None) -> None:
        self.rows = rows
        self.on_accrue = on_accrue

    def accrue(self, worker: WorkerRecord, until: float) -> None:
        """Add the worker's seconds since it was last accounted, up to ``until``.

        A worker whose start is still in flight is not accounted yet: its price depends on where it lands.
        Its first accrual after the start covers everything since the request, at the right price (an
        unpriced row would stay unpriced, and the spending cap would never see that worker)."""
        if worker.info is None:
            return
        start = worker.billed_until if worker.billed_until is not None else worker.requested_at
        if until <= start:
            return
        entries = [LedgerEntry(worker.id, worker.endpoint, day, worker.gpu_type or "cpu", worker.gpus, seconds,
                               None if worker.price is None else seconds * worker.price)
                   for day, seconds in _split_by_day(start, until)]
        if isinstance(self.rows, SettledLedgerRows):
            settled = self.rows.settle(worker.id, start, until, entries)
            if settled != until:  # another replica billed it meanwhile: carry on from there next time
                worker.billed_until = settled
                return
        else:
            for entry in entries:
                self.rows.add(entry)
        for entry in entries:
            if self.on_accrue is not None:
                self.on_accrue(entry)
        worker.billed_until = until

    def spent(self, endpoint: str, day: str) -> float:
        return self.rows.spent(endpoint, day)

    def usage(self, days: int = 31) -> list[dict[str, Any]]:
        return self.rows.usage(days)

    def worker_seconds(self, worker_id: str) -> float:
        return self.rows.worker_seconds(worker_id)


def today(now: float) -> str:
    return _day(now)
