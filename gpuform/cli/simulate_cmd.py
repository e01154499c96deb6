"""``gpuform simulate``: replay a request trace through the autoscaler, for one policy or a sweep."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpuform.cli.common import globals_of
from gpuform.config.load import load
from gpuform.config.types import parse_duration
from gpuform.errors import GpuformError

if TYPE_CHECKING:  # the simulator is imported when `simulate` runs, not on every gpuform command
    from gpuform.plan.model import Traffic
    from gpuform.simulate.model import ColdStart, Settings
    from gpuform.simulate.report import Slo
    from gpuform.simulate.study import Study
    from gpuform.simulate.trace import Trace


def _bad(option: str, exc: ValueError) -> typer.BadParameter:
    return typer.BadParameter(str(exc), param_hint=option)


def _duration(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        return float(parse_duration(value))
    except ValueError as exc:
        raise _bad(option, exc) from None


def _cold_start(value: str) -> ColdStart:
    from gpuform.simulate.model import parse_cold_start

    try:
        return parse_cold_start(value)
    except ValueError as exc:
        raise _bad("--cold-start", exc) from None


def _slo(value: str) -> Slo:
    from gpuform.simulate.report import parse_slo

    try:
        return parse_slo(value)
    except ValueError as exc:
        raise _bad("--slo", exc) from None


def _shift(arrivals: list[float], start: str | None) -> list[float]:
    from gpuform.simulate.trace import parse_time

    if start is None:
        return arrivals
    try:
        at = parse_time(start)
    except ValueError:
        raise typer.BadParameter(f'"{start}" is not a time; write ISO 8601, e.g. 2026-01-05T09:00:00Z',
                                 param_hint="--start") from None
    return [a - arrivals[0] + at for a in arrivals]


def _axes(sweep: bool, given: list[str], base: Settings) -> dict[str, list[Any]] | None:
    if given and not sweep:
        raise typer.BadParameter(f"unexpected argument(s) {' '.join(given)}; sweep axes follow --sweep",
                                 param_hint="AXIS=VALUES")
    if not sweep:
        return None
    from gpuform.simulate.report import default_axes, parse_axis

    axes = default_axes(base.policy, base.concurrency)
    axes.update(parse_axis(a) for a in given)
    return axes


def simulate_cmd(
        ctx: typer.Context,
        endpoint: Annotated[str, typer.Argument(help="Endpoint of the configuration (-C DIR) to simulate.")],
        trace: Annotated[Path | None, typer.Option("--trace", metavar="FILE", help="Requests to replay: the Azure "
                                                   "LLM trace CSV, or CSV/JSONL with a timestamp column.")] = None,
        from_gateway: Annotated[bool, typer.Option("--from-gateway", help="Replay the endpoint's request history, "
                                                   "read from its gateway's admin API (instead of --trace).")]
        = False,
        since: Annotated[str, typer.Option("--since", help="With --from-gateway: how far back (e.g. 1h, 7d).")]
        = "7d",
        axes: Annotated[list[str] | None, typer.Argument(metavar="[AXIS=V1,V2,...]...", show_default=False,
                                                         help="With --sweep: values to sweep, e.g. "
                                                              "min_workers=0,1,2 idle_timeout=5s,30s,120s.")] = None,
        cold_start: Annotated[str | None, typer.Option("--cold-start", help="Worker start-up: 30s, or "
                                                       "uniform:25s,50s (default: 30s; with --from-gateway, the "
                                                       "gateway's measured median when it has one).")] = None,
        concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Requests one worker runs at "
                                                        "once (default: worker.concurrency).")] = None,
        service_time: Annotated[str | None, typer.Option("--service-time", help="Every request runs this long "
                                                         "(default: the trace's service_time, else its "
                                                         "tokens at the rates below).")] = None,
        prefill_rate: Annotated[float, typer.Option("--prefill-rate", min=1e-6, help="Prompt tokens per second, "
                                                    "per request.")] = 4000.0,
        decode_rate: Annotated[float, typer.Option("--decode-rate", min=1e-6, help="Generated tokens per "
                                                   "second, per request.")] = 50.0,
        min_workers: Annotated[int | None, typer.Option("--min-workers", min=0)] = None,
        max_workers: Annotated[int | None, typer.Option("--max-workers", min=1)] = None,
        idle_timeout: Annotated[str | None, typer.Option("--idle-timeout", help="E.g. 5s, 2m.")] = None,
        scaler: Annotated[str | None, typer.Option("--scaler", help="queue_delay, request_count or "
                                                   "rate_forecast.")] = None,
        scaler_value: Annotated[float | None, typer.Option("--scaler-value", min=1e-9)] = None,
        keep_alive: Annotated[str | None, typer.Option("--keep-alive", help="fixed or learned (from the "
                                                       "trace's idle gaps).")] = None,
        gpu_type: Annotated[str | None, typer.Option("--gpu-type", help="Price workers as this type (default: "
                                                     "the first of gpu.types the pool prices).")] = None,
        slo: Annotated[str, typer.Option("--slo", help="Delay objective, e.g. p95=2s.")] = "p95=2s",
        sweep: Annotated[bool, typer.Option("--sweep", help="Simulate a grid of policies; print the frontier "
                                            "and the cheapest meeting --slo.")] = False,
        plot: Annotated[Path | None, typer.Option("--plot", metavar="FILE.png", help="Draw the frontier and "
                                                  "the chosen policy over time (needs matplotlib: the simulate "
                                                  "extra).")] = None,
        start: Annotated[str | None, typer.Option("--start", help="Move the trace to start at this time "
                                                  "(schedules are evaluated on the simulated clock).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of random cold starts.")] = 0,
        warm_start: Annotated[bool, typer.Option("--warm-start/--cold-begin", help="Floor workers are ready at "
                                                 "the first request (default), or start cold then.")] = True,
        json_out: Annotated[bool, typer.Option("--json", help="As JSON.")] = False) -> None:
    """Replay a request trace through the gateway's autoscaler on a simulated clock: worker-seconds, cost, cold
    starts and delays of a policy, or with --sweep the cost/latency frontier of many."""
    from gpuform.simulate.study import render_one, render_sweep, run_study, to_json

    if (trace is None) == (not from_gateway):
        raise typer.BadParameter("give a trace file (--trace FILE) or --from-gateway, one of them",
                                 param_hint="--trace")
    source: Path | Traffic = trace if trace is not None else _recorded(ctx, endpoint,
                                                                      _duration(since, "--since") or 0.0)
    study = _study(ctx, endpoint, source, cold_start, concurrency, service_time, prefill_rate, decode_rate, gpu_type,
                   slo, start, seed, warm_start,
                   dict(min_workers=min_workers, max_workers=max_workers, scaler=scaler, scaler_value=scaler_value,
                        keep_alive=keep_alive, idle_timeout=_duration(idle_timeout, "--idle-timeout")))
    result = run_study(study, _axes(sweep, axes or [], study.settings), timeline=plot is not None)
    if plot is not None:
        from gpuform.simulate.plot import draw

        draw(plot, study, result)
    if json_out:
        sys.stdout.write(json.dumps(to_json(study, result), indent=2) + "\n")
    else:
        sys.stdout.write((render_sweep(study, result) if sweep else render_one(study, result.outcomes[0])) + "\n")
        if plot is not None:
            sys.stdout.write(f"plot written to {plot}\n")


def _recorded(ctx: typer.Context, endpoint: str, window: float) -> Traffic:
    """The endpoint's recorded traffic, from its gateway; raises GpuformError when there is none."""
    from gpuform.cli.runtime_cmds import endpoint_admin
    from gpuform.engine.traffic import cold_starts, read_traffic

    ws = globals_of(ctx).workspace()
    try:
        with endpoint_admin(ws, ws.store.read(), endpoint) as admin:
            recorded = read_traffic(admin, endpoint, window, cold_start=cold_starts(admin).get(endpoint))
    finally:
        ws.close()
    if not recorded.arrivals:
        raise GpuformError(f"the gateway recorded no finished request of {endpoint} in the window asked for",
                           "Send it some traffic, or widen --since (the history keeps timings.request_history).")
    return recorded


def _trace(source: Path | Traffic) -> Trace:
    from gpuform.simulate.estimate import trace_of
    from gpuform.simulate.trace import read_trace

    return read_trace(source) if isinstance(source, Path) else trace_of(source)


def _cold_of(source: Path | Traffic, given: str | None) -> ColdStart:
    from gpuform.simulate.estimate import cold_start_of
    from gpuform.simulate.model import ColdStart

    if given is not None or isinstance(source, Path):
        return _cold_start(given or "30s")
    seconds = cold_start_of(source)[0]
    return ColdStart(seconds, seconds)


def _study(ctx: typer.Context, endpoint: str, source: Path | Traffic, cold_start: str | None, concurrency: int | None,
           service_time: str | None, prefill_rate: float, decode_rate: float, gpu_type: str | None, slo: str,
           start: str | None, seed: int, warm_start: bool, changes: dict[str, Any]) -> Study:
    from gpuform.simulate.model import ServiceModel, Settings
    from gpuform.simulate.scenario import endpoint_basis, override
    from gpuform.simulate.study import Study

    g = globals_of(ctx)
    config = load(g.directory.resolve(), g.variables, require_env=False)
    basis = endpoint_basis(config, endpoint, gpu_type)
    cold, objective = _cold_of(source, cold_start), _slo(slo)
    model = ServiceModel(_duration(service_time, "--service-time"), prefill_rate, decode_rate)
    trace = _trace(source)
    policy = override(basis.policy, **changes)
    settings = Settings(policy, cold, concurrency or basis.concurrency, basis.reconcile_interval,
                        basis.price_per_second, warm_start=warm_start, seed=seed)
    if settings.reconcile_interval <= 0:
        raise GpuformError("the gateway's reconcile_interval is 0", "Set gateway timings.reconcile_interval > 0.")
    return Study(trace, _shift([r.at for r in trace.requests], start), model.times(trace), basis,
                 settings, objective, model.describe(trace))
