"""The expected monthly cost of an endpoint from its recorded traffic: the requests its gateway recorded,
with their measured execution times, replayed through the autoscaler with a policy (the planned one), on a
simulated clock that runs to the time of the read (idle workers stop, floor workers keep running), then
scaled from the recorded window to 30 days.

A policy whose decisions depend only on the present (fixed keep-alive, no rate forecast, schedule, spending
cap or sleep mode) is replayed in sessions: bursts of requests separated by quiet gaps long enough for every
worker above the floor to stop; a gap costs the floor's workers for its length. That gives the same figures
as one replay of the whole window without ticking through days of silence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from gpuform.config.load import Config
from gpuform.errors import GpuformError
from gpuform.gateway.autoscaler import ScalingPolicy
from gpuform.plan.model import Expected, Traffic
from gpuform.simulate.engine import simulate
from gpuform.simulate.model import ColdStart, Settings
from gpuform.simulate.scenario import Basis, endpoint_basis
from gpuform.simulate.trace import Request, Trace

DEFAULT_COLD_START = 30.0
MONTH = 30 * 86400.0


@dataclass(frozen=True)
class Replay:
    """What a replay of the recorded window cost: worker-seconds, cold starts, and the window it covered."""

    worker_seconds: float
    cold_starts: int
    start: float
    end: float


def trace_of(traffic: Traffic) -> Trace:
    """The recorded requests as a trace with measured service times (``gpuform simulate --from-gateway``)."""
    return Trace(f"{traffic.endpoint} (gateway history)",
                 tuple(Request(at, service_time=ex) for at, ex in zip(traffic.arrivals, traffic.executions,
                                                                      strict=True)))


def cold_start_of(traffic: Traffic, default: float = DEFAULT_COLD_START) -> tuple[float, str]:
    """The gateway's measured cold start (median) when it has one, else ``default``; and which it is."""
    if traffic.cold_start is not None and traffic.cold_starts:
        return traffic.cold_start, f"measured (median of {traffic.cold_starts})"
    return default, "default"


def expected_cost(traffic: Traffic, basis: Basis, policy: ScalingPolicy | None = None,
                  default_cold_start: float = DEFAULT_COLD_START) -> Expected:
    """The month's cost of ``traffic`` under ``policy`` (default: the basis's); ``traffic`` must hold at
    least one request."""
    cold, source = cold_start_of(traffic, default_cold_start)
    settings = Settings(policy or basis.policy, ColdStart(cold, cold), basis.concurrency, basis.reconcile_interval,
                        basis.price_per_second)
    done = replay(traffic, settings)
    scale = MONTH / max(done.end - done.start, basis.reconcile_interval)
    price = basis.price_per_second
    return Expected(None if price is None else round(done.worker_seconds * price * scale, 2),
                    done.worker_seconds * scale / 3600, len(traffic.arrivals), done.end - done.start, cold, source,
                    done.cold_starts * scale)


def memoryless(policy: ScalingPolicy) -> bool:
    """Whether the policy's decisions depend only on the present (then quiet gaps split a replay)."""
    return (policy.keep_alive == "fixed" and policy.scaler != "rate_forecast" and not policy.schedule
            and policy.spend_limit_per_day is None and not policy.sleep_mode)


def replay(traffic: Traffic, settings: Settings) -> Replay:
    """Replay ``traffic`` up to the time it was read (or its last completion, if later)."""
    end = max(traffic.until, traffic.arrivals[-1])
    if memoryless(settings.policy):
        split = _in_sessions(traffic, settings, end)
        if split is not None:
            return split
    return _whole(traffic, settings, 0, len(traffic.arrivals), end)


def _whole(traffic: Traffic, settings: Settings, first: int, last: int, until: float,
           start: float | None = None) -> Replay:
    run = simulate(list(traffic.arrivals[first:last]), list(traffic.executions[first:last]),
                   replace(settings, start=start, until=until))
    return Replay(run.worker_seconds, run.cold_starts, run.t0, run.end)


def sessions(traffic: Traffic, quiet: float) -> list[tuple[int, int]]:
    """Index ranges of requests whose next request comes later than ``quiet`` after the latest a request
    before it could still run (its arrival plus its execution)."""
    out: list[tuple[int, int]] = []
    first, busy = 0, -1.0
    for i, (at, ex) in enumerate(zip(traffic.arrivals, traffic.executions, strict=True)):
        if i > first and at > busy + quiet:
            out.append((first, i))
            first = i
        busy = max(busy if i > first else at, at + ex)
    out.append((first, len(traffic.arrivals)))
    return out


def _in_sessions(traffic: Traffic, settings: Settings, end: float) -> Replay | None:
    """Each session replayed on the whole replay's tick grid until every worker above the floor has stopped,
    the gaps at the floor's cost; None when a session ran into the next (a queue longer than allowed for)."""
    p, t0, step = settings.policy, traffic.arrivals[0], settings.reconcile_interval
    quiet = settings.cold_start.high + p.idle_timeout + 3 * step + 1.0
    parts = sessions(traffic, quiet)
    starts = [t0 + ((traffic.arrivals[first] - t0) // step) * step for first, _ in parts]
    total, cold, done = 0.0, 0, None
    for n, (first, last) in enumerate(parts):
        nxt = starts[n + 1] if n + 1 < len(parts) else end
        busy = max(a + e for a, e in zip(traffic.arrivals[first:last], traffic.executions[first:last], strict=True))
        done = _whole(traffic, settings, first, last, min(nxt, busy + quiet), starts[n])
        if done.end > nxt and n + 1 < len(parts):
            return None
        total += done.worker_seconds + p.min_workers * max(0.0, nxt - done.end)
        cold += done.cold_starts
    return Replay(total, cold, t0, max(end, done.end if done else end))


def estimates(config: Config, traffic: Mapping[str, Traffic]) -> tuple[dict[str, Expected], list[str]]:
    """The expected cost of each endpoint of ``config`` with recorded ``traffic`` (by address) under its
    configured (planned) policy; a warning for each that cannot be estimated."""
    found: dict[str, Expected] = {}
    warnings: list[str] = []
    for address, recorded in sorted(traffic.items()):
        try:
            found[address] = expected_cost(recorded, endpoint_basis(config, recorded.endpoint))
        except GpuformError as exc:
            warnings.append(f"no expected cost for {address}: {exc.message}")
    return found, warnings
