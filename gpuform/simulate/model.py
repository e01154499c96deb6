"""What the simulator assumes of the world: how long a worker takes to start, how long a request runs, what a
worker costs. Each is a small value parsed once from the command line or the configuration."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gpuform.config.types import parse_duration
from gpuform.errors import GpuformError
from gpuform.gateway.autoscaler import ScalingPolicy
from gpuform.simulate.trace import Trace

DEFAULT_PREFILL_RATE = 4000.0  # prompt tokens per second, per request
DEFAULT_DECODE_RATE = 50.0  # generated tokens per second, per request (one stream of a batch of about 8)


@dataclass(frozen=True)
class ColdStart:
    """From the request for a worker to its first contact: a fixed duration or uniform between two."""

    low: float
    high: float

    def sample(self, rng: random.Random) -> float:
        return self.low if self.high == self.low else rng.uniform(self.low, self.high)

    def __str__(self) -> str:
        return f"{self.low:g}s" if self.high == self.low else f"uniform:{self.low:g}s,{self.high:g}s"


def parse_cold_start(text: str) -> ColdStart:
    """``30s`` (fixed) or ``uniform:25s,50s``; raises ValueError saying how to write it."""
    kind, sep, rest = text.partition(":")
    if not sep:
        value = float(parse_duration(text))
        return ColdStart(value, value)
    parts = rest.split(",")
    if kind.strip() != "uniform" or len(parts) != 2:
        raise ValueError(f'"{text}" is not a cold start; write a duration (30s) or uniform:LOW,HIGH (uniform:25s,50s)')
    low, high = (float(parse_duration(p)) for p in parts)
    if high < low:
        raise ValueError(f'"{text}": the high bound is below the low one')
    return ColdStart(low, high)


@dataclass(frozen=True)
class ServiceModel:
    """How long one request runs on a worker: a constant, the trace's measured times, or its tokens at the
    given rates (prefill + decode). A request's time does not depend on how many run beside it."""

    constant: float | None = None
    prefill_rate: float = DEFAULT_PREFILL_RATE
    decode_rate: float = DEFAULT_DECODE_RATE

    def describe(self, trace: Trace) -> str:
        if self.constant is not None:
            return f"{self.constant:g}s per request"
        if trace.has_service_times:
            return "measured (the trace's service_time)"
        return f"from tokens (prefill {self.prefill_rate:g} tok/s, decode {self.decode_rate:g} tok/s)"

    def times(self, trace: Trace) -> list[float]:
        """Each request's service time; raises GpuformError when the trace cannot size its requests."""
        if self.constant is not None:
            return [self.constant] * len(trace.requests)
        if trace.has_service_times:
            return [r.service_time or 0.0 for r in trace.requests]
        if not trace.has_tokens:
            raise GpuformError(f"the trace {trace.name} has neither token counts nor service times",
                               "Pass --service-time 2s, or give the trace ContextTokens and GeneratedTokens "
                               "columns.")
        return [(r.context_tokens or 0) / self.prefill_rate + (r.generated_tokens or 0) / self.decode_rate
                for r in trace.requests]


@dataclass(frozen=True)
class Settings:
    """One simulated policy with its world. ``warm_start``: the workers the first decision starts (the
    floor at t0) are ready at t0, as on an endpoint that has been running; ``timeline`` records workers and
    queue at each tick (for plots); ``until``: the run ends there, not when the last request completes."""

    policy: ScalingPolicy
    cold_start: ColdStart
    concurrency: int = 1
    reconcile_interval: float = 1.0
    price_per_second: float | None = None  # one worker
    wake_time: float = 1.0  # vLLM sleep mode: a sleeping worker's wake-up
    warm_start: bool = True
    seed: int = 0
    timeline: bool = False
    start: float | None = None  # the clock's t0 (ticks at start + k * interval), at or before the first request
    until: float | None = None  # keep the clock running (ticks, idle stops, billing) to here after the last request
