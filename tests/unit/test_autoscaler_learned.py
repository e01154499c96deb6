"""The learned keep-alive and the rate_forecast scaler on a fake clock: tiny scripted observations, exact
expectations (the remembered demand is plain data; the decision stays a pure function of it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpuform.gateway.autoscaler import ScalingPolicy, Stats, WorkerView, desired_workers, policy_of, remember
from gpuform.gateway.demand import (
    Demand,
    Forecast,
    GapWindow,
    IdleGaps,
    Learned,
    Load,
    forecast_load,
    gap_window,
    learned_floor,
    observe_gaps,
    observe_load,
)
from gpuform.gateway.states import WorkerState
from gpuform.simulate.engine import simulate
from gpuform.simulate.model import ColdStart, ServiceModel, Settings
from gpuform.simulate.trace import read_trace
from gpuform.spec import EndpointSpec
from tests.traces import azure_trace
from tests.unit.test_config import errors_of, write_config

pytestmark = pytest.mark.unit
LEARN = Learned(bin=10.0, history=3600.0, low_percentile=20.0, high_percentile=80.0, margin=0.1, min_samples=2)


def make_policy(**overrides: Any) -> ScalingPolicy:
    return replace(policy_of(EndpointSpec(pool="p", gateway="g")), **overrides)


# ---- the idle-gap histogram ------------------------------------------------------------------------------

def test_the_window_is_the_low_bin_and_the_upper_edge_of_the_high_bin_plus_the_margin() -> None:
    gaps = tuple((float(i), length) for i, length in enumerate([3.0, 12.0, 15.0, 25.0, 95.0]))
    window = gap_window(gaps, LEARN)  # bins 0 1 1 2 9: 20th percentile bin 0, 80th bin 2
    assert window is not None
    assert (window.prewarm, window.keep, window.samples) == (0.0, pytest.approx(33.0), 5)
    assert gap_window((), LEARN) is None


def test_a_gap_runs_from_the_first_idle_observation_to_the_next_arrival() -> None:
    g = observe_gaps(IdleGaps(), 100.0, busy=False, woke_at=0.0, learned=LEARN)
    assert g.since == 100.0
    assert observe_gaps(g, 110.0, busy=False, woke_at=0.0, learned=LEARN) is g  # still idle: nothing changes
    g = observe_gaps(g, 130.0, busy=True, woke_at=125.0, learned=LEARN)
    assert (g.gaps, g.since) == (((125.0, 25.0),), None)
    g = observe_gaps(g, 140.0, busy=False, woke_at=125.0, learned=LEARN)
    g = observe_gaps(g, 150.0, busy=False, woke_at=145.0, learned=LEARN)  # a job came and went in between
    assert (g.gaps, g.since) == (((125.0, 25.0), (145.0, 5.0)), 150.0)
    assert g.window == GapWindow(0.0, pytest.approx(33.0), 2)


def test_old_gaps_are_forgotten_after_the_history() -> None:
    g = IdleGaps(((0.0, 50.0), (3000.0, 5.0)), None, None)
    g = observe_gaps(g, 3700.0, busy=False, woke_at=0.0, learned=LEARN)
    assert g.gaps == ((3000.0, 5.0),) and g.window == GapWindow(0.0, pytest.approx(11.0), 1)


def test_the_learned_floor_prewarms_before_the_low_percentile_and_keeps_until_the_high_one() -> None:
    g = IdleGaps((), since=1000.0, window=GapWindow(prewarm=60.0, keep=120.0, samples=10))
    at = [learned_floor(g, LEARN, idle_timeout=5.0, cold_start=30.0, now=1000.0 + t) for t in (0, 29, 30, 119, 120)]
    assert at == [0, 0, 1, 1, 0]
    early = replace(g, window=GapWindow(prewarm=20.0, keep=120.0, samples=10))  # 20 - 30 s: keep from the start
    assert [learned_floor(early, LEARN, 5.0, 30.0, 1000.0 + t) for t in (0, 119, 120)] == [1, 1, 0]
    few = replace(g, window=GapWindow(20.0, 120.0, samples=1))
    assert learned_floor(few, LEARN, 5.0, 30.0, 1000.0) == 0  # fewer than min_samples: the fixed timeout rules
    assert learned_floor(replace(g, since=None), LEARN, 5.0, 30.0, 1060.0) == 0  # the endpoint has work


def test_a_learned_endpoint_keeps_its_last_worker_past_the_idle_timeout_then_stops_it() -> None:
    policy = make_policy(keep_alive="learned", learned=LEARN, idle_timeout=5.0, cold_start=30.0)
    demand = Demand(IdleGaps((), since=1000.0, window=GapWindow(0.0, 33.0, 5)))
    stats = Stats(0, 0, 0.0, (WorkerView("w1", WorkerState.IDLE, idle_since=1000.0),), demand=demand)
    assert desired_workers(stats, policy, 1020.0).stop == ()
    assert desired_workers(stats, policy, 1033.0).stop == ("w1",)
    assert desired_workers(stats, make_policy(idle_timeout=5.0), 1020.0).stop == ("w1",)  # fixed: stops at 5 s


def test_a_learned_endpoint_prewarms_a_worker_one_cold_start_before_the_expected_arrival() -> None:
    policy = make_policy(keep_alive="learned", learned=LEARN, idle_timeout=5.0, cold_start=30.0)
    demand = Demand(IdleGaps((), since=1000.0, window=GapWindow(100.0, 220.0, 5)))
    stats = Stats(0, 0, 0.0, (), demand=demand)
    assert [desired_workers(stats, policy, 1000.0 + t).start for t in (0, 69, 70, 219, 220)] == [0, 0, 1, 1, 0]


def test_remember_keeps_only_what_the_policy_uses() -> None:
    stats = Stats(queued=0, running_jobs=0, oldest_wait=0.0)
    assert remember(Demand(), stats, make_policy(), 10.0) == Demand()
    learned = remember(Demand(), stats, make_policy(keep_alive="learned"), 10.0)
    assert learned.gaps.since == 10.0 and learned.load == Load()


# ---- the load forecast -----------------------------------------------------------------------------------

FORECAST = Forecast(window=10.0, windows=3)


def test_load_windows_average_the_load_over_time() -> None:
    d = observe_load(Load(), 0.0, 0, FORECAST)
    for t, load in ((5.0, 2), (10.0, 2), (20.0, 4), (30.0, 4)):
        d = observe_load(d, t, load, FORECAST)
    # [0,10): 0 for 5 s then 2 for 5 s; [10,20): 2; [20,30): 4
    assert d.means == (1.0, 2.0, 4.0) and (d.start, d.area, d.last) == (30.0, 0.0, 4)
    d = observe_load(d, 35.0, 0, FORECAST)
    assert (d.area, d.last, d.means) == (20.0, 0, (1.0, 2.0, 4.0))


def test_a_long_silence_fills_the_windows_with_the_last_load() -> None:
    d = observe_load(Load(), 0.0, 3, FORECAST)
    d = observe_load(d, 12.0, 0, FORECAST)
    d = observe_load(d, 1005.0, 0, FORECAST)
    assert d.means == (0.0, 0.0, 0.0) and d.start == 1000.0 and d.area == 0.0


def test_the_forecast_follows_the_trend_one_horizon_ahead_and_holds_a_recent_peak() -> None:
    rising = Load(last_at=30.0, last=4, start=30.0, area=0.0, means=(0.0, 2.0, 4.0))
    # centres 5, 15, 25; slope 0.2 jobs/s; at 30 + 30 s: 2 + 0.2 * (60 - 15) = 11
    assert forecast_load(rising, FORECAST, horizon=30.0) == pytest.approx(11.0)
    falling = replace(rising, means=(6.0, 3.0, 0.0))
    assert forecast_load(falling, FORECAST, 30.0) == 6.0  # the trend says 0: the peak of the windows holds
    assert forecast_load(replace(rising, means=(2.5,)), FORECAST, 30.0) == 2.5
    assert forecast_load(Load(last_at=1.0, last=3), FORECAST, 30.0) == 3.0


def test_rate_forecast_starts_workers_for_the_forecast_load() -> None:
    policy = make_policy(scaler="rate_forecast", scaler_value=4.0, max_workers=10, cold_start=30.0, forecast=FORECAST)
    rising = Demand(load=Load(last_at=30.0, last=4, start=30.0, area=0.0, means=(0.0, 2.0, 4.0)))
    busy = (WorkerView("w1", WorkerState.RUNNING),)
    decision = desired_workers(Stats(0, 4, 0.0, busy, demand=rising), policy, 30.0)
    assert (decision.desired, decision.start) == (3, 2)  # ceil(11 / 4)
    assert desired_workers(Stats(0, 4, 0.0, busy), make_policy(scaler="request_count", max_workers=10), 30.0).start == 0


# ---- configuration --------------------------------------------------------------------------------------

def test_the_new_options_reach_the_policy() -> None:
    spec = EndpointSpec.model_validate({"pool": "p", "gateway": "g", "scaling": {
        "scaler": "rate_forecast", "scaler_value": 6, "keep_alive": "learned", "cold_start": "45s",
        "learned": {"bin": "30s", "min_samples": 4, "high_percentile": 95}, "forecast": {"window": "5s", "windows": 4}}})
    policy = policy_of(spec)
    assert (policy.scaler, policy.keep_alive, policy.cold_start) == ("rate_forecast", "learned", 45.0)
    assert policy.learned == Learned(bin=30.0, history=14400.0, low_percentile=5.0, high_percentile=95.0,
                                     margin=0.1, min_samples=4)
    assert policy.forecast == Forecast(window=5.0, windows=4)


def test_invalid_learned_and_forecast_settings_are_located(tmp_path: Path) -> None:
    write_config(tmp_path, """
        pools: {p: {provider: local}}
        gateway: {g: {pool: p}}
        endpoints:
          e:
            pool: p
            scaling:
              keep_alive: learnt
              learned: {low_percentile: 90, high_percentile: 50}
              forecast: {windows: 1}
    """)
    found = "\n".join(errors_of(tmp_path))
    assert "gpuform.yaml:7:19: error: scaling.keep_alive: Input should be 'fixed' or 'learned'" in found
    assert "gpuform.yaml:8:16: error: scaling.learned: low_percentile (90) is above high_percentile (50)" in found
    assert "gpuform.yaml:9:27: error: scaling.forecast.windows: Input should be greater than or equal to 2" in found


# ---- on traces with idle gaps ----------------------------------------------------------------------------

def _thinned(every: int) -> tuple[list[float], list[float]]:
    trace = read_trace(azure_trace("conv.csv"))
    service = ServiceModel().times(trace)
    kept = range(0, len(trace.requests), every)
    return [trace.requests[i].at for i in kept], [service[i] for i in kept]


@pytest.mark.parametrize("source", ["code.csv", "conv.csv thinned to 1 in 40"])
def test_the_learned_keep_alive_cuts_cold_starts_on_traces_that_go_idle(source: str) -> None:
    if source == "code.csv":
        trace = read_trace(azure_trace("code.csv"))
        arrivals, service = [r.at for r in trace.requests], ServiceModel().times(trace)
    else:
        arrivals, service = _thinned(40)
    fixed = make_policy(max_workers=9, idle_timeout=5.0)
    learned = replace(fixed, keep_alive="learned", learned=Learned(bin=10.0))
    runs = [simulate(arrivals, service, Settings(p, ColdStart(30.0, 30.0), 8)) for p in (fixed, learned)]
    assert runs[1].cold_starts < 0.7 * runs[0].cold_starts
    assert runs[1].worker_seconds < runs[0].worker_seconds  # a kept worker costs less than its cold start
