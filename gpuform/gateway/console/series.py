"""What the console's charts show, computed from the request history and the workers' rows: pure functions of
plain data and a window, so every replica draws the same charts from the shared store."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuform.gateway.states import JobStatus
from gpuform.gateway.store import HistoryEntry

WINDOWS: dict[str, float] = {"15m": 900.0, "1h": 3600.0, "6h": 21_600.0, "24h": 86_400.0, "7d": 604_800.0}
DEFAULT_WINDOW = "1h"
BUCKETS = 30
STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Frame:
    """``count`` buckets of ``step`` seconds that end at ``end``."""

    start: float
    step: float
    count: int

    @classmethod
    def ending(cls, now: float, window: float, count: int = BUCKETS) -> Frame:
        step = window / count
        end = math.ceil(now / step) * step
        return cls(end - window, step, count)

    @property
    def end(self) -> float:
        return self.start + self.step * self.count

    def index(self, t: float) -> int | None:
        """The bucket ``t`` falls in, or None outside the frame."""
        if t < self.start or t >= self.end:
            return None
        return min(self.count - 1, int((t - self.start) // self.step))


@dataclass
class Series:
    """Every chart's values, one per bucket."""

    frame: Frame
    requests: dict[str, list[int]] = field(default_factory=dict)
    delay: dict[str, list[float | None]] = field(default_factory=dict)
    execution: dict[str, list[float | None]] = field(default_factory=dict)
    workers: list[int] = field(default_factory=list)
    cold_starts: list[int] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)


def window_of(text: str | None) -> str:
    """A known window name (the default for anything else: a bad value never fails a page)."""
    return text if text in WINDOWS else DEFAULT_WINDOW


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def request_counts(entries: Iterable[HistoryEntry], frame: Frame) -> dict[str, list[int]]:
    """Finished requests per bucket of arrival, by status."""
    out = {str(s): [0] * frame.count for s in STATUSES}
    for e in entries:
        i = frame.index(e.created_at)
        if i is not None and str(e.status) in out:
            out[str(e.status)][i] += 1
    return out


def timing_percentiles(entries: Iterable[HistoryEntry], frame: Frame,
                       kind: str) -> dict[str, list[float | None]]:
    """p50 and p95 per bucket of ``delay`` or ``execution`` (seconds)."""
    buckets: list[list[float]] = [[] for _ in range(frame.count)]
    for e in entries:
        i = frame.index(e.created_at)
        value = e.delay if kind == "delay" else e.execution
        if i is not None and value is not None:
            buckets[i].append(value)
    return {"p50": [percentile(b, 0.5) for b in buckets], "p95": [percentile(b, 0.95) for b in buckets]}


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def worker_series(workers: Iterable[dict[str, Any]], frame: Frame,
                  now: float) -> tuple[list[int], list[int], list[float]]:
    """Workers alive in each bucket, cold starts (workers requested) per bucket, and spend per bucket (each
    worker's price per second over the seconds it ran in the bucket)."""
    alive, starts, spend = [0] * frame.count, [0] * frame.count, [0.0] * frame.count
    for w in workers:
        begin = float(w.get("requested_at") or 0.0)
        stop = float(w["stopped_at"]) if w.get("stopped_at") is not None else now
        i = frame.index(begin)
        if i is not None:
            starts[i] += 1
        price = float(w.get("price") or 0.0)
        for b in range(frame.count):
            lo = frame.start + b * frame.step
            seconds = _overlap(begin, stop, lo, lo + frame.step)
            if seconds > 0:
                alive[b] += 1
                spend[b] += seconds * price
    return alive, starts, spend


def series(entries: Sequence[HistoryEntry], workers: Sequence[dict[str, Any]], now: float,
           window: str) -> Series:
    frame = Frame.ending(now, WINDOWS[window_of(window)])
    alive, starts, spend = worker_series(workers, frame, now)
    return Series(frame, request_counts(entries, frame), timing_percentiles(entries, frame, "delay"),
                  timing_percentiles(entries, frame, "execution"), alive, starts, spend)
