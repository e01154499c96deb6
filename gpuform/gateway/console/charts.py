"""SVG charts drawn on the server: stacked bars and lines over a :class:`~.series.Frame`, with a title, axis
labels and a text alternative (``role="img"`` and ``<title>``), and no script."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from gpuform.gateway.console.series import Frame

W, H = 480, 190
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 26, 24
COLORS = {"COMPLETED": "#2e7d32", "FAILED": "#c62828", "TIMED_OUT": "#ef6c00", "CANCELLED": "#6d6d6d",
          "p50": "#1565c0", "p95": "#8e24aa", "workers": "#00695c", "cold starts": "#ef6c00", "spend": "#5d4037"}


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.2g}"
    if unit == "s":
        return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.3g}s"
    return f"{value:.3g}"


def _clock(epoch: float, step: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%m-%d %H:%M" if step >= 3600 else "%H:%M")


def _frame_svg(name: str, frame: Frame, top: float, unit: str, body: str, legend: Sequence[str],
               summary: str) -> str:
    plot_h = H - TOP - BOTTOM
    grid = "".join(
        f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + plot_h * f:.1f}" y2="{TOP + plot_h * f:.1f}" class="grid"/>'
        f'<text x="{LEFT - 4}" y="{TOP + plot_h * f + 4:.1f}" class="tick" text-anchor="end">'
        f'{html.escape(_fmt(top * (1 - f), unit))}</text>' for f in (0.0, 0.5, 1.0))
    times = (f'<text x="{LEFT}" y="{H - 6}" class="tick">{_clock(frame.start, frame.step)}</text>'
             f'<text x="{W - RIGHT}" y="{H - 6}" class="tick" text-anchor="end">{_clock(frame.end, frame.step)}</text>')
    keys = "".join(f'<tspan fill="{COLORS.get(k, "#333")}">■ </tspan><tspan>{html.escape(k)}  </tspan>'
                   for k in legend)
    label = html.escape(f"{name}: {summary}")
    return (f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{label}" class="chart" data-chart="{html.escape(name)}"'
            f' data-summary="{html.escape(summary)}"><title>{label}</title>{grid}{times}{body}'
            f'<text x="{LEFT}" y="12" class="legend">{keys}</text></svg>')


def _nice_top(peak: float) -> float:
    return peak if peak > 0 else 1.0


def bars(name: str, frame: Frame, stacks: dict[str, list[float]] | dict[str, list[int]], unit: str = "") -> str:
    """Stacked bars, one stack per bucket, in the order of ``stacks``."""
    count = frame.count
    totals = [sum(float(values[i]) for values in stacks.values()) for i in range(count)]
    top = _nice_top(max(totals, default=0.0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    width = plot_w / count
    rects = []
    for i in range(count):
        base = 0.0
        for key, values in stacks.items():
            value = float(values[i])
            if value <= 0:
                continue
            y0, y1 = plot_h * (1 - base / top), plot_h * (1 - (base + value) / top)
            rects.append(f'<rect x="{LEFT + i * width + 1:.1f}" y="{TOP + y1:.1f}" width="{max(1.0, width - 2):.1f}"'
                         f' height="{max(0.5, y0 - y1):.1f}" fill="{COLORS.get(key, "#333")}">'
                         f'<title>{html.escape(key)}: {html.escape(_fmt(value, unit))}</title></rect>')
            base += value
    summary = ", ".join(f"{k} {_fmt(sum(float(v) for v in vals), unit)}" for k, vals in stacks.items())
    return _frame_svg(name, frame, top, unit, "".join(rects), list(stacks), "total " + summary)


def lines(name: str, frame: Frame, series: dict[str, list[float | None]], unit: str = "s") -> str:
    """One polyline per series; buckets without a value break the line."""
    values = [v for vals in series.values() for v in vals if v is not None]
    top = _nice_top(max(values, default=0.0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    width = plot_w / frame.count
    paths = []
    for key, vals in series.items():
        points = [(LEFT + (i + 0.5) * width, TOP + plot_h * (1 - v / top)) for i, v in enumerate(vals) if v is not None]
        if points:
            text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{COLORS.get(key, "#333")}"/>'
                           for x, y in points)
            paths.append(f'<polyline points="{text}" fill="none" stroke="{COLORS.get(key, "#333")}" '
                         f'stroke-width="1.5"/>{dots}')
    latest = {k: next((v for v in reversed(vals) if v is not None), None) for k, vals in series.items()}
    summary = ", ".join(f"{k} {'-' if v is None else _fmt(v, unit)}" for k, v in latest.items())
    return _frame_svg(name, frame, top, unit, "".join(paths), list(series), "latest " + summary)
