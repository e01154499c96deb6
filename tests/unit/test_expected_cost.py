"""The plan's expected monthly cost: recorded traffic replayed through the autoscaler with the planned policy,
extrapolated to 30 days; rendered beside the min/max bounds; never a change."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from gpuform.engine.traffic import traffic_of
from gpuform.gateway.autoscaler import ScalingPolicy
from gpuform.plan.model import Action, Cost, Expected, Plan, ResourceChange, Traffic
from gpuform.plan.render import render_json, render_markdown, render_text
from gpuform.simulate.estimate import _whole, expected_cost, replay
from gpuform.simulate.model import ColdStart, Settings
from gpuform.simulate.scenario import Basis

pytestmark = pytest.mark.unit

POLICY = ScalingPolicy(min_workers=0, max_workers=1, idle_timeout=10.0, scaler="queue_delay", scaler_value=4.0)
BASIS = Basis("chat", POLICY, 1, 1.0, 0.001, "A100")
TRAFFIC = Traffic("chat", (1000.0, 1001.0, 1002.0), (1.0, 1.0, 1.0), 0.0, 1100.0, 5.0, 3)


def test_three_requests_cost_one_cold_start_their_work_and_the_idle_timeout_scaled_to_a_month() -> None:
    # one worker requested at 1000, ready at 1005, runs 1005-1008, stops 10 s idle later: 18 s in 100 s
    e = expected_cost(TRAFFIC, BASIS)
    assert e.per_month == pytest.approx(18 * 0.001 * 30 * 86400 / 100)
    assert e.per_month == 466.56 and e.worker_hours_per_month == pytest.approx(129.6)
    assert e.requests == 3 and e.window_seconds == 100.0 and e.cold_starts_per_month == pytest.approx(25920)
    assert e.basis == "from 3 requests over 100 s, cold start 5s measured (median of 3)"


def test_a_longer_idle_timeout_costs_its_extra_idle_time() -> None:
    assert expected_cost(TRAFFIC, BASIS, replace(POLICY, idle_timeout=60.0)).per_month == 1762.56  # 68 s


def test_without_a_measured_cold_start_the_default_is_used_and_said() -> None:
    e = expected_cost(replace(TRAFFIC, cold_start=None, cold_starts=0), BASIS)
    assert e.cold_start == 30.0 and e.cold_start_source == "default" and e.per_month == 1114.56  # 43 s


def test_an_unknown_price_gives_worker_hours_only() -> None:
    e = expected_cost(TRAFFIC, replace(BASIS, price_per_second=None))
    assert e.per_month is None and e.worker_hours_per_month == pytest.approx(129.6)


def test_a_floor_worker_is_billed_for_the_whole_window() -> None:
    e = expected_cost(TRAFFIC, BASIS, replace(POLICY, min_workers=1))
    assert e.worker_hours_per_month == pytest.approx(720.0)


@pytest.mark.parametrize("policy", [POLICY, replace(POLICY, min_workers=1, max_workers=3),
                                    replace(POLICY, idle_timeout=120.0, max_workers=2)])
def test_replaying_in_sessions_gives_the_figures_of_one_whole_replay(policy: ScalingPolicy) -> None:
    rng = random.Random(1)
    arrivals: list[float] = []
    at = 0.0
    for _ in range(120):
        at += rng.choice([0.5, 2, 30, 400, 1200])
        arrivals.append(at)
    traffic = Traffic("x", tuple(arrivals), tuple(rng.uniform(0.1, 3) for _ in arrivals), 0, at + 5000, 5.0, 2)
    settings = Settings(policy, ColdStart(5, 5), 1, 1.0, 0.001)
    assert replay(traffic, settings) == _whole(traffic, settings, 0, len(arrivals), at + 5000)


def test_history_rows_become_traffic_oldest_first_with_the_measured_cold_start() -> None:
    rows = [{"created_at": 20.0, "execution": None}, {"created_at": 10.0, "execution": 1.5}]
    t = traffic_of(rows, "chat", 0.0, 30.0, {"p50": 4.0, "count": 2}, limit=2)
    assert t.arrivals == (10.0, 20.0) and t.executions == (1.5, 0.0) and t.cold_start == 4.0 and t.truncated
    assert traffic_of(rows, "chat", 0.0, 30.0, {"p50": None, "count": 0}).cold_start is None


def _plan(action: Action) -> Plan:
    expected = expected_cost(TRAFFIC, BASIS)
    attrs = {"scaling": {"idle_timeout": 10.0}}
    change = ResourceChange("endpoint.chat", "endpoint", "chat", "local", [action], attrs, attrs, pool="here",
                            cost=Cost(0.0, 3.6, "A100", expected=expected))
    return Plan("lineage", 1, "digest", changes=[change])


def test_an_unchanged_endpoint_shows_its_expected_cost_and_the_plan_stays_empty() -> None:
    plan = _plan(Action.NO_OP)
    assert not plan.has_changes
    text = render_text(plan)
    assert "endpoint.chat: $466.56/month expected (from 3 requests over 100 s" in text
    assert text.endswith("No changes. Your infrastructure matches the configuration.")
    assert "`endpoint.chat` $466.56/month (from 3 requests" in render_markdown(plan)


def test_a_changed_endpoint_shows_it_beside_the_bounds_in_text_markdown_and_json() -> None:
    plan = _plan(Action.UPDATE)
    text = render_text(plan)
    assert "cost: $0.00/h at min_workers, $3.60/h at max_workers (priced as A100)" in text
    assert "expected: $466.56/month expected (from 3 requests over 100 s, cold start 5s measured (median of 3); " \
           "under a day of history: a rough extrapolation), with the planned policy" in text
    md = render_markdown(plan)
    assert "| expected $/month |" in md and "| $0.00 → $3.60 | $466.56/month (from 3 requests" in md
    data = json.loads(render_json(plan))
    expected = data["resource_changes"][0]["cost"]["expected_per_month"]
    assert expected["amount"] == 466.56 and expected["requests"] == 3 and expected["window_seconds"] == 100.0
    assert expected["basis"].startswith("from 3 requests over 100 s")
    again = Plan.from_json(data).changes[0].cost
    assert again is not None and again.expected == Expected.from_json(expected)
