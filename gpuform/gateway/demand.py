"""What the autoscaler remembers of an endpoint's recent demand, as plain immutable data: the idle gaps it had
(for the learned keep-alive) and its load over recent windows (for the ``rate_forecast`` scaler).

Nothing here does I/O or reads a clock. The reconciler (and the simulator, the same way) keeps one
:class:`Demand` per endpoint and folds each observation into it with
:func:`gpuform.gateway.autoscaler.remember` before asking :func:`~gpuform.gateway.autoscaler.desired_workers`.

- **Idle gaps** (Shahrad et al., "Serverless in the Wild", USENIX ATC'20, hybrid histogram policy): a gap runs
  from the first observation that finds the endpoint with nothing queued or running to the arrival of its next
  job. The last gaps (at most :data:`MAX_GAPS`, none older than ``history``) are kept; binned ``bin`` seconds
  wide, the bin of the ``low_percentile`` gives when the next job is expected at the earliest (``prewarm``) and
  the upper edge of the bin of the ``high_percentile``, plus ``margin``, how long to keep a worker (``keep``).
- **Load**: jobs queued or running, averaged over time in windows ``window`` seconds wide (by Little's law,
  the arrival rate times the service time); the last ``windows`` complete ones are kept. The forecast
  ``horizon`` seconds ahead is the higher of the least-squares line through them and their highest mean (a
  worker stopped now is back a cold start later at the soonest, so a recent peak is held that long).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

MAX_GAPS = 1024  # idle gaps kept per endpoint (bounded memory)


@dataclass(frozen=True)
class Learned:
    """Settings of the learned keep-alive (``scaling.keep_alive: learned``)."""

    bin: float = 60.0
    history: float = 4 * 3600.0
    low_percentile: float = 5.0
    high_percentile: float = 99.0
    margin: float = 0.1  # fraction of the high percentile added to it
    min_samples: int = 10


@dataclass(frozen=True)
class Forecast:
    """Settings of the ``rate_forecast`` scaler: load windows ``window`` seconds wide, the last ``windows``."""

    window: float = 10.0
    windows: int = 6


@dataclass(frozen=True)
class GapWindow:
    """The learned window, in seconds after a gap starts: expect the next job from ``prewarm``; keep a worker
    until ``keep``; learned from ``samples`` gaps."""

    prewarm: float
    keep: float
    samples: int


@dataclass(frozen=True)
class IdleGaps:
    gaps: tuple[tuple[float, float], ...] = ()  # (ended at, length), oldest first
    since: float | None = None  # the endpoint has had nothing to do since then (None: it has work)
    window: GapWindow | None = None


@dataclass(frozen=True)
class Load:
    last_at: float | None = None  # the previous observation
    last: int = 0  # jobs queued or running at the previous observation
    start: float = 0.0  # the current window's start
    area: float = 0.0  # jobs x seconds so far in the current window
    means: tuple[float, ...] = ()  # mean load of the last complete windows, oldest first


@dataclass(frozen=True)
class Demand:
    gaps: IdleGaps = field(default_factory=IdleGaps)
    load: Load = field(default_factory=Load)


# ---- idle gaps -----------------------------------------------------------------------------------------

def observe_gaps(g: IdleGaps, now: float, busy: bool, woke_at: float, learned: Learned) -> IdleGaps:
    """``g`` after an observation at ``now``: ``busy`` when jobs are queued or running, ``woke_at`` when a job
    last arrived at the endpoint while it had none."""
    if g.since is None:
        return g if busy else _open(g, now, learned)
    if woke_at > g.since or busy:
        end = woke_at if woke_at > g.since else now
        closed = _record(g, end, end - g.since, learned)
        return closed if busy else _open(closed, now, learned)
    return g


def _open(g: IdleGaps, now: float, learned: Learned) -> IdleGaps:
    kept = tuple(s for s in g.gaps if s[0] >= now - learned.history)
    if len(kept) == len(g.gaps):
        return replace(g, since=now)
    return IdleGaps(kept, now, gap_window(kept, learned))


def _record(g: IdleGaps, end: float, length: float, learned: Learned) -> IdleGaps:
    kept = tuple(s for s in g.gaps if s[0] >= end - learned.history)[-(MAX_GAPS - 1):]
    gaps = (*kept, (end, length))
    return IdleGaps(gaps, None, gap_window(gaps, learned))


def gap_window(gaps: tuple[tuple[float, float], ...], learned: Learned) -> GapWindow | None:
    """The window the histogram of ``gaps`` gives (None without gaps)."""
    if not gaps:
        return None
    bins = sorted(int(length // learned.bin) for _, length in gaps)
    low, high = _percentile(bins, learned.low_percentile), _percentile(bins, learned.high_percentile)
    return GapWindow(low * learned.bin, (high + 1) * learned.bin * (1 + learned.margin), len(bins))


def _percentile(ordered: list[int], p: float) -> int:
    """The smallest value with at least ``p`` % of ``ordered`` at or below it."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def learned_floor(g: IdleGaps, learned: Learned, idle_timeout: float, cold_start: float, now: float) -> int:
    """Workers the learned window asks for at ``now``: one from ``prewarm - cold_start`` after the gap started
    (from its start when that comes before ``idle_timeout``) until ``keep``; none while gaps are fewer than
    ``min_samples`` (the fixed idle timeout rules) or the endpoint has work."""
    w = g.window
    if g.since is None or w is None or w.samples < learned.min_samples:
        return 0
    elapsed = now - g.since
    if elapsed >= w.keep:
        return 0
    start = w.prewarm - cold_start
    return 1 if start <= idle_timeout or elapsed >= start else 0


# ---- load forecast -------------------------------------------------------------------------------------

def observe_load(d: Load, now: float, load: int, forecast: Forecast) -> Load:
    """``d`` after an observation at ``now`` finding ``load`` jobs queued or running (the previous load is
    taken to have held since the previous observation)."""
    if d.last_at is None:
        return Load(now, load, now, 0.0, ())
    at, start, area, means = d.last_at, d.start, d.area, d.means
    skipped = max(0, math.floor((now - start) / forecast.window) - forecast.windows - 1)
    if skipped:  # a long silence: windows wholly inside it held the last load
        means = (*means, *([float(d.last)] * min(skipped, forecast.windows)))[-forecast.windows:]
        start += skipped * forecast.window
        at, area = max(at, start), 0.0
    while now >= start + forecast.window:
        end = start + forecast.window
        area += d.last * (end - at)
        means = (*means, area / forecast.window)[-forecast.windows:]
        at, start, area = end, end, 0.0
    return Load(now, load, start, area + d.last * (now - at), means)


def forecast_load(d: Load, forecast: Forecast, horizon: float) -> float:
    """The load expected ``horizon`` seconds after the last observation: the higher of the least-squares line
    through the complete windows' means (at their centres) and the highest of them; the one mean there is with
    a single window, the last load with none; never below 0."""
    n = len(d.means)
    if n == 0 or d.last_at is None:
        return float(d.last)
    if n == 1:
        return d.means[0]
    return max(*d.means, _trend(d, forecast, horizon))


def _trend(d: Load, forecast: Forecast, horizon: float) -> float:
    n, at = len(d.means), d.last_at or 0.0
    xs = [d.start - (n - i - 0.5) * forecast.window for i in range(n)]
    mx, my = sum(xs) / n, sum(d.means) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, d.means, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return max(0.0, my + slope * (at + horizon - mx))
