"""``--plot FILE.png``: the cost/latency frontier and, for the chosen policy, workers and queue over time
against the load. matplotlib comes from the ``gpuform[simulate]`` extra and is imported only here, only
when a plot is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuform.errors import GpuformError
from gpuform.simulate.report import spend
from gpuform.simulate.study import Result, Study, describe_policy


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise GpuformError("--plot needs matplotlib, which is not installed",
                           "Install the extra: pip install 'gpuform[simulate]' (or leave out --plot).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(path: Path, study: Study, result: Result) -> None:
    """Write the figure to ``path`` (PNG); raises GpuformError when matplotlib is missing or the file
    cannot be written."""
    plt = _pyplot()
    fig, (front, load, workers) = plt.subplots(3, 1, figsize=(10, 11), height_ratios=(3, 2, 3))
    try:
        _frontier(front, study, result)
        _timeline(load, workers, study, result)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise GpuformError(f"cannot write the plot {path}: {exc.strerror or exc}",
                           "Give --plot a path in a writable directory.") from None
    finally:
        plt.close(fig)


def _frontier(ax: Any, study: Study, result: Result) -> None:
    outs = result.outcomes
    priced = all(o.cost is not None for o in outs)
    pct = f"p{study.slo.percentile:g}"
    ax.scatter([spend(o) for o in outs], [o.slo_delay for o in outs], s=14, color="0.6", label="policies")
    edge = [outs[i] for i in result.frontier]
    ax.plot([spend(o) for o in edge], [o.slo_delay for o in edge], "o-", color="tab:blue", label="frontier")
    ax.axhline(study.slo.seconds, color="tab:red", linestyle="--", linewidth=1, label=f"SLO {study.slo}")
    if result.chosen is not None:
        o = outs[result.chosen]
        ax.scatter([spend(o)], [o.slo_delay], marker="*", s=260, color="tab:orange", zorder=5,
                   label=f"chosen: {describe_policy(o.policy)}")
    ax.set_xlabel("cost ($)" if priced else "worker-seconds")
    ax.set_ylabel(f"{pct} delay (s)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title(f"endpoint.{study.basis.name} on {study.trace.name}: cost against {pct} delay")
    ax.legend(fontsize=8)


def _timeline(load: Any, workers: Any, study: Study, result: Result) -> None:
    run = result.timeline
    t0 = study.arrivals[0]
    minutes = [int((a - t0) // 60) for a in study.arrivals]
    counts = [0] * (max(minutes) + 1)
    for m in minutes:
        counts[m] += 1
    load.bar(range(len(counts)), counts, width=1.0, align="edge", color="tab:gray")
    load.set_ylabel("requests / minute")
    load.set_title("load")
    if run is None or not run.timeline:
        return
    times = [(t - t0) / 60 for t, *_ in run.timeline]
    workers.step(times, [r[1] for r in run.timeline], where="post", label="workers (live)", color="tab:blue")
    workers.step(times, [r[2] for r in run.timeline], where="post", label="workers (ready)", color="tab:green")
    workers.set_ylabel("workers")
    workers.set_ylim(bottom=0)
    workers.set_xlabel("minutes since the first request")
    queue = workers.twinx()
    queue.plot(times, [r[3] for r in run.timeline], color="tab:red", linewidth=0.8, label="queued requests")
    queue.set_ylabel("queued requests")
    queue.set_ylim(bottom=0)
    workers.set_title(f"workers and queue: {describe_policy(run_policy(result))}")
    handles = workers.get_legend_handles_labels()
    extra = queue.get_legend_handles_labels()
    workers.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="upper left")


def run_policy(result: Result) -> Any:
    return result.outcomes[result.chosen if result.chosen is not None else 0].policy
