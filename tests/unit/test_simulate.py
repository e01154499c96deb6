"""``gpuform simulate``: traces in every format (bad lines located), the event loop on hand-made traces with
exact figures, sweeps and the frontier, the command line, the plot, and a replay of a real trace."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gpuform.errors import InputError
from gpuform.gateway.autoscaler import ScalingPolicy
from gpuform.simulate.engine import simulate
from gpuform.simulate.model import ColdStart, ServiceModel, Settings, parse_cold_start
from gpuform.simulate.report import (
    Slo,
    cheapest_meeting,
    frontier,
    outcome,
    parse_slo,
    peak_workers_needed,
    percentile,
)
from gpuform.simulate.trace import read_trace
from tests.conftest import write_config
from tests.traces import azure_trace

pytestmark = pytest.mark.unit
T0 = 1_700_000_000.0


def policy(**fields: Any) -> ScalingPolicy:
    base = ScalingPolicy(min_workers=0, max_workers=3, idle_timeout=5.0, scaler="queue_delay", scaler_value=4.0)
    return replace(base, **fields)


def run(offsets: list[float], service: float | list[float], cold: float = 10.0, concurrency: int = 1,
        **fields: Any) -> Any:
    arrivals = [T0 + o for o in offsets]
    times = service if isinstance(service, list) else [service] * len(offsets)
    return simulate(arrivals, times, Settings(policy(**fields), ColdStart(cold, cold), concurrency))


def actions(r: Any) -> list[tuple[float, str, int]]:
    return [(round(t - T0, 6), a, n) for t, a, n in r.actions]


# ---- traces ---------------------------------------------------------------------------------------------


def test_the_azure_csv_is_read_as_published(tmp_path: Path) -> None:
    path = tmp_path / "conv.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                    "2023-11-16 18:15:50.9951690,396,109\n")
    trace = read_trace(path)
    assert len(trace.requests) == 2 and trace.has_tokens
    assert trace.requests[0].context_tokens == 374 and trace.requests[1].generated_tokens == 109
    assert trace.span == pytest.approx(4.314579)
    assert trace.t0 == pytest.approx(1700158546.68059)  # naive times are UTC
    assert ServiceModel(None, 100.0, 10.0).times(trace) == pytest.approx([3.74 + 4.4, 3.96 + 10.9])


def test_csv_with_epoch_seconds_and_jsonl_with_iso_times(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("ts,service_time\n12.5,1.5\n10,0.25\n")
    trace = read_trace(csv)
    assert [r.at for r in trace.requests] == [10.0, 12.5]  # sorted by arrival
    assert trace.has_service_times and not trace.has_tokens
    assert ServiceModel().times(trace) == [0.25, 1.5]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"timestamp": "2024-01-01T00:00:00Z", "prompt_tokens": 10, "completion_tokens": 5}\n\n'
                     '{"timestamp": "2024-01-01T01:00:00+01:00", "prompt_tokens": 20, "completion_tokens": 1}\n')
    trace = read_trace(jsonl)
    assert [r.at for r in trace.requests] == [1704067200.0, 1704067200.0]
    assert ServiceModel(2.0).times(trace) == [2.0, 2.0]  # a constant wins


def test_every_bad_line_is_located_with_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,ContextTokens,GeneratedTokens\n10,5,5\n11,five,5\nyesterday,1,1\n12,1\n")
    with pytest.raises(InputError) as caught:
        read_trace(path)
    rendered = [d.render() for d in caught.value.diagnostics]
    assert rendered[0].startswith(f"{path}:3:4: error: ContextTokens \"five\" is not a token count")
    assert rendered[1].startswith(f'{path}:4:1: error: timestamp "yesterday" is not a time')
    assert "ISO 8601" in rendered[1]
    assert rendered[2].startswith(f"{path}:5:1: error: 2 field(s), the header has 3")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"timestamp": 1}\n{"timestamp": 2,}\n[1]\n{"time": 3, "service_time": -1}\n{"x": 1}\n')
    with pytest.raises(InputError) as caught:
        read_trace(jsonl)
    where = [(d.source.line, d.source.col) for d in caught.value.diagnostics if d.source]
    assert where == [(2, 17), (3, 1), (4, 13), (5, 1)]


def test_a_trace_without_a_time_column_or_without_requests_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("when,tokens\n1,2\n")
    with pytest.raises(InputError, match="1 error"):
        read_trace(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("timestamp\n")
    with pytest.raises(InputError, match="empty trace"):
        read_trace(tmp_path / "b.csv")


def test_cold_start_and_slo_flags_parse_or_say_how_to_write_them() -> None:
    assert parse_cold_start("30s") == ColdStart(30.0, 30.0)
    assert parse_cold_start("uniform:25s,50s") == ColdStart(25.0, 50.0)
    with pytest.raises(ValueError, match="uniform:LOW,HIGH"):
        parse_cold_start("normal:3,4")
    assert parse_slo("p95=2s") == Slo(95.0, 2.0) and parse_slo("p99=500ms") == Slo(99.0, 0.5)
    with pytest.raises(ValueError, match="pNN=DURATION"):
        parse_slo("fast")


# ---- the event loop, by hand ------------------------------------------------------------------------------


def test_one_request_from_zero_waits_one_cold_start() -> None:
    r = run([0.0], service=2.0, cold=10.0)
    assert actions(r) == [(0.0, "start", 1)]  # scaled from zero on arrival, not at the next tick
    assert r.delays == [10.0] and r.cold_starts == 1
    assert r.worker_seconds == pytest.approx(12.0)  # start-up billed; the run ends when the last request does


def test_a_warm_floor_worker_serves_at_once_and_queues_the_rest() -> None:
    r = run([0.0, 0.5, 1.0], service=1.0, min_workers=1)
    assert actions(r) == [(0.0, "start", 1)] and r.cold_starts == 0
    assert r.delays == [0.0, 0.5, 1.0]
    assert r.worker_seconds == pytest.approx(3.0)
    o = outcome(r, Settings(policy(min_workers=1), ColdStart(0, 0), price_per_second=0.01), Slo(95, 0.75))
    assert (o.p50, o.p95, o.p99, o.over_slo, o.meets_slo) == (0.5, 1.0, 1.0, 1, False)
    assert o.cost == pytest.approx(0.03)


def test_an_idle_worker_stops_after_its_timeout_and_the_next_request_starts_a_new_one() -> None:
    r = run([0.0, 20.0], service=1.0, cold=5.0, idle_timeout=5.0)
    assert actions(r) == [(0.0, "start", 1), (11.0, "stop", 1), (20.0, "start", 2)]
    assert r.delays == [5.0, 5.0] and r.cold_starts == 2
    assert r.worker_seconds == pytest.approx(11.0 + 6.0)


def test_sleep_mode_wakes_a_sleeping_worker_instead_of_a_cold_start() -> None:
    r = run([0.0, 20.0], service=1.0, cold=5.0, idle_timeout=5.0, sleep_mode=True)
    assert actions(r) == [(0.0, "start", 1), (11.0, "sleep", 1), (20.0, "wake", 1)]
    assert r.delays == [5.0, 1.0] and (r.cold_starts, r.wakes) == (1, 1)
    assert r.worker_seconds == pytest.approx(22.0)  # asleep, it still holds its GPU


def test_queue_delay_adds_one_worker_per_tick_once_the_oldest_job_waited_past_the_value() -> None:
    r = run([0.0, 0.0, 0.0], service=100.0, cold=10.0, max_workers=3, scaler_value=2.0)
    assert actions(r) == [(0.0, "start", 1), (3.0, "start", 2), (4.0, "start", 3)]
    assert r.delays == [10.0, 13.0, 14.0]
    assert r.worker_seconds == pytest.approx(114 + 111 + 110)


def test_request_count_sizes_workers_to_the_work_and_concurrency_packs_jobs() -> None:
    r = run([0.0] * 5, service=4.0, cold=2.0, concurrency=2, max_workers=5, scaler="request_count",
            scaler_value=2.0)
    assert actions(r) == [(0.0, "start", 1), (1.0, "start", 2), (1.0, "start", 3)]
    assert sorted(r.delays) == [2.0, 2.0, 3.0, 3.0, 3.0]
    assert r.peak_workers == 3


def test_random_cold_starts_are_reproducible_by_seed() -> None:
    arrivals, service = [T0 + i * 120.0 for i in range(20)], [1.0] * 20
    settings = Settings(policy(idle_timeout=1.0), ColdStart(25.0, 50.0))
    first, again = simulate(arrivals, service, settings), simulate(arrivals, service, settings)
    assert first.delays == again.delays and 25.0 <= min(first.delays) < max(first.delays) <= 50.0
    assert simulate(arrivals, service, replace(settings, seed=1)).delays != first.delays


def test_percentiles_are_nearest_rank_and_the_frontier_drops_dominated_policies() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0
    arrivals, service = [T0 + i * 20.0 for i in range(30)], [1.0] * 30
    outs = [outcome(simulate(arrivals, service, s), s, Slo(95, 2.0)) for s in (
        Settings(policy(min_workers=0, idle_timeout=5.0), ColdStart(10, 10), price_per_second=1.0),
        Settings(policy(min_workers=1, idle_timeout=5.0), ColdStart(10, 10), price_per_second=1.0),
        Settings(policy(min_workers=0, idle_timeout=600.0), ColdStart(10, 10), price_per_second=1.0))]
    # from zero every time: a cold start per request, each worker billed 16 s (the last until the end)
    assert (outs[0].cold_starts, outs[0].p95, outs[0].worker_seconds) == (30, 10.0, 16 * 29 + 11)
    assert (outs[1].cold_starts, outs[1].p95, outs[1].worker_seconds) == (0, 0.0, 29 * 20 + 1)  # a warm floor
    assert (outs[2].cold_starts, outs[2].p95, outs[2].max_delay) == (1, 0.0, 10.0)  # warm after the first
    assert outs[2].worker_seconds == 29 * 20 + 1  # ... and no better than the floor: as fast, as dear
    assert frontier(outs) == [0, 1]
    assert cheapest_meeting(outs) == 1
    assert peak_workers_needed([0.0, 0.5, 1.0, 5.0], [2.0, 2.0, 2.0, 1.0], 2) == 2


# ---- the command line ---------------------------------------------------------------------------------------

CONFIG = """
pools:
  lab: {provider: local, price_per_gpu_second: {H100-80GB: 0.001}}
policies:
  evenings: {schedule: [{cron: "0 18 * * *", duration: 1h, min_workers: 1}]}
gateway: {main: {pool: lab, api_keys: {app: "${env.NOT_SET_ANYWHERE}"}}}
endpoints:
  chat:
    pool: lab
    worker: {template: echo, concurrency: 2}
    gpu: {types: [A100-80GB, H100-80GB], count: 2}
    scaling: {min_workers: 0, max_workers: 3, idle_timeout: 5s}
    policy: evenings
"""


def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    rows = [f"{T0 + i * 3.5},{100 + i},{20 + i % 7}" for i in range(40)]
    path.write_text("timestamp,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    return path


def test_simulate_json_reads_the_endpoint_from_the_configuration(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    result = cli("-C", str(tmp_path), "simulate", "chat", "--trace", str(_trace(tmp_path)), "--json",
                 "--cold-start", "20s", "--idle-timeout", "1m")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["model"]["price_per_worker_second"] == pytest.approx(0.002)  # H100 (the priced type) x 2 GPUs
    assert data["model"]["concurrency"] == 2 and data["model"]["cold_start"] == "20s"
    assert data["trace"]["requests"] == 40
    (only,) = data["policies"]
    assert only["policy"] == {"min_workers": 0, "max_workers": 3, "idle_timeout": 60.0, "scaler": "queue_delay",
                              "scaler_value": 4.0, "keep_alive": "fixed"}
    # six requests queue behind the first 20 s start: queue_delay adds a worker per tick past 4 s of waiting
    assert only["cold_starts"] == 3 and only["delay"]["max"] == 20.0
    assert only["cost"] == pytest.approx(only["worker_seconds"] * 0.002, abs=1e-5)
    text = cli("-C", str(tmp_path), "simulate", "chat", "--trace", str(_trace(tmp_path)))
    assert text.code == 0 and "worker-seconds" in text.out and "p95" in text.out


def test_simulate_sweep_prints_the_frontier_and_the_cheapest_meeting_the_slo(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    args = ["-C", str(tmp_path), "simulate", "chat", "--trace", str(_trace(tmp_path)), "--sweep",
            "min_workers=0,1", "idle_timeout=5s,30s,120s", "--slo", "p95=1s"]
    text = cli(*args)
    assert text.code == 0, text.err
    assert "cost/latency frontier" in text.out and "Cheapest meeting p95 ≤ 1s" in text.out
    data = json.loads(cli(*args, "--json").out)
    assert len(data["policies"]) == 2 * 3 * 4  # the default scaler_value axis stays
    chosen = data["policies"][data["chosen"]]
    assert chosen["meets_slo"] and data["chosen"] in data["frontier"]
    assert chosen["cost"] == min(p["cost"] for p in data["policies"] if p["meets_slo"])


def test_simulate_plot_writes_a_png(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib", reason="the gpuform[simulate] extra (in [dev]) is not installed")
    write_config(tmp_path, CONFIG)
    out = tmp_path / "frontier.png"
    result = cli("-C", str(tmp_path), "simulate", "chat", "--trace", str(_trace(tmp_path)), "--sweep",
                 "min_workers=0,1", "idle_timeout=5s,60s", "scaler_value=2,4", "--plot", str(out))
    assert result.code == 0, result.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "expected"), [
    (["--cold-start", "banana"], "is not a duration"),
    (["--slo", "fast"], "pNN=DURATION"),
    (["--min-workers", "5"], "min_workers (5) is greater than max_workers (3)"),
    (["--sweep", "warmth=1,2"], "is not a sweep axis"),
    (["min_workers=0,1"], "sweep axes follow --sweep"),
    (["--gpu-type", "B200-192GB"], 'no price for GPU type "B200-192GB"'),
    (["--bogus"], "No such option"),
])
def test_simulate_bad_flags_are_clear(cli, tmp_path: Path, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    result = cli("-C", str(tmp_path), "simulate", "chat", "--trace", str(_trace(tmp_path)), *args)
    assert result.code == 1 and expected in result.err, result.err
    assert "Traceback" not in result.err


def test_simulate_names_a_missing_endpoint_and_locates_a_bad_trace(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    trace = _trace(tmp_path)
    missing = cli("-C", str(tmp_path), "simulate", "caht", "--trace", str(trace))
    assert missing.code == 1 and 'no endpoint "caht"' in missing.err and 'Did you mean "chat"' in missing.err
    trace.write_text(trace.read_text() + "later,1,1\n")
    bad = cli("-C", str(tmp_path), "simulate", "chat", "--trace", str(trace))
    assert bad.code == 1 and f"{trace}:42:1: error" in bad.err and "Traceback" not in bad.err
    gone = cli("-C", str(tmp_path), "simulate", "chat", "--trace", str(tmp_path / "nope.csv"))
    assert gone.code == 1 and "cannot read the trace" in gone.err


# ---- a real trace -------------------------------------------------------------------------------------------


def test_the_whole_conv_trace_replays_in_seconds() -> None:
    trace = read_trace(azure_trace("conv.csv"))
    assert len(trace.requests) == 19_366
    arrivals, service = [r.at for r in trace.requests], ServiceModel().times(trace)
    peak = peak_workers_needed(arrivals, service, 8)
    settings = Settings(policy(max_workers=peak), ColdStart(30, 30), concurrency=8)
    started = time.perf_counter()
    r = simulate(arrivals, service, settings)
    assert time.perf_counter() - started <= 5.0
    assert all(d < float("inf") for d in r.delays) and r.cold_starts >= 1
    assert r.worker_seconds > 3000.0
