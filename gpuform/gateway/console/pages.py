"""The console's pages: overview, endpoint and the charts fragment the endpoint page refreshes. Each answers
only with what the caller's key may see; anything unexpected is an HTML page that says what to do."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gpuform.gateway.console import charts
from gpuform.gateway.console import series as S
from gpuform.gateway.console.html import badge, duration, esc, money, page, seconds, table
from gpuform.gateway.console.model import CHART_ROWS, Overview, chart_series, overview, timeline, visible
from gpuform.gateway.http import Caller, HTTPError, runtime_of
from gpuform.gateway.runtime import EndpointRecord, Runtime
from gpuform.gateway.workers import WorkerRecord

STATUS_FILTER = ("", "COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")


def who(caller: Caller) -> str:
    return "admin" if caller.admin else f"key {caller.key_name}"


def _workers_cell(counts: dict[str, int]) -> str:
    if not counts:
        return '<span class="muted">none</span>'
    return " ".join(f'<span class="pill">{esc(state)} {n}</span>' for state, n in counts.items())


def _overview_row(o: Overview) -> list[str]:
    status = badge(o.status) + (f'<div class="note">{esc(o.message[:160])}</div>' if o.message else "")
    return [f'<a href="/console/endpoints/{esc(o.name)}">{esc(o.name)}</a>', status, _workers_cell(o.workers),
            f"{o.queued} queued · {o.running} running", f"{seconds(o.delay_p50)} / {seconds(o.delay_p95)}",
            f"{o.requests_today}{'+' if o.capped else ''}", money(o.spent_today)]


def overview_page(request: Request, caller: Caller, csrf: str) -> HTMLResponse:
    rt = runtime_of(request)
    rows = [_overview_row(overview(rt, caller, ep)) for ep in visible(rt, caller)]
    body = ('<h1>Endpoints</h1>' + table(
        ["Endpoint", "Status", "Workers", "Queue", "Delay p50 / p95 (today)", "Requests today", "Spend today"],
        rows, caption="Every endpoint you may use", empty="No endpoint you may use is on this gateway.",
        id_="endpoints"))
    return page("Endpoints", body, who=who(caller), csrf=csrf, gateway=rt.config.name)


def endpoint_of(rt: Runtime, caller: Caller, name: str) -> EndpointRecord:
    ep = rt.endpoints.get(name)
    if ep is None or ep.deleting or not caller.may_use(ep):
        raise HTTPError(404, f"no endpoint named {name!r} that your key may use")
    return ep


def _cold_start_bar(worker: WorkerRecord) -> str:
    """The last cold start as a bar: one segment per phase, its length the seconds it took."""
    phases = timeline(worker.to_json())
    total = max((t for _, t in phases), default=0.0)
    if not phases or total <= 0:
        return '<span class="muted">-</span>'
    parts, last = [], 0.0
    for i, (phase, at) in enumerate(phases):
        x, w = 200 * last / total, max(1.0, 200 * (at - last) / total)
        parts.append(f'<rect x="{x:.1f}" y="2" width="{w:.1f}" height="12" class="phase phase-{i % 4}">'
                     f'<title>{esc(phase)} at {at:.2f}s</title></rect>')
        last = at
    label = ", ".join(f"{p} {t:.2f}s" for p, t in phases)
    return (f'<svg viewBox="0 0 200 16" class="bar" role="img" aria-label="cold start: {esc(label)}">'
            f'<title>cold start: {esc(label)}</title>{"".join(parts)}</svg><span class="note">{total:.2f}s</span>')


def _worker_rows(rt: Runtime, ep: EndpointRecord, admin: bool) -> list[list[str]]:
    now = rt.clock()
    rows = []
    for w in sorted(rt.fleet.of(ep.name), key=lambda w: w.requested_at, reverse=True):
        uptime = duration((w.stopped_at or now) - (w.ready_at or w.requested_at))
        gpu = f"{w.gpu_type} ×{w.gpus}" if w.gpus else (w.gpu_type or "-")
        ident = esc(w.id)
        if admin:
            ident = (f'<button type="button" class="link" data-worker-log="{esc(w.id)}" '
                     f'aria-label="Show the log of worker {esc(w.id)}">{esc(w.id)}</button>')
        rows.append([ident, badge(str(w.state)), esc(w.host or "-"), esc(gpu), uptime, _cold_start_bar(w)])
    return rows


def charts_html(rt: Runtime, caller: Caller, ep: EndpointRecord, window: str) -> str:
    data, capped = chart_series(rt, caller, ep.name, window)
    frame = data.frame
    parts = [charts.bars("Requests by status", frame, data.requests),
             charts.lines("Delay p50/p95", frame, data.delay),
             charts.lines("Execution p50/p95", frame, data.execution),
             charts.bars("Workers", frame, {"workers": data.workers}),
             charts.bars("Cold starts", frame, {"cold starts": data.cold_starts}),
             charts.bars("Spend", frame, {"spend": data.spend}, unit="$")]
    names = ("Requests by status", "Delay p50 / p95", "Execution p50 / p95", "Workers", "Cold starts", "Spend")
    note = (f'<p class="note chart-note">More than {CHART_ROWS:,} requests in this window: the request charts show '
            'the newest of them; pick a shorter window.</p>') if capped else ""
    return note + "".join(f'<figure class="chart-box"><figcaption>{name}</figcaption>{svg}</figure>'
                          for name, svg in zip(names, parts, strict=True))


def _window_form(name: str, window: str) -> str:
    options = "".join(f'<option value="{w}"{" selected" if w == window else ""}>{w}</option>' for w in S.WINDOWS)
    return (f'<form method="get" action="/console/endpoints/{esc(name)}" class="inline" id="window-form">'
            f'<label for="window">Window</label> <select id="window" name="window">{options}</select> '
            f'<button type="submit">Show</button></form>')


def _send_form(name: str) -> str:
    return (f'<form id="send-form" data-endpoint="{esc(name)}" class="send">'
            '<label for="send-input">Input (JSON)</label>'
            '<textarea id="send-input" name="input" rows="4" spellcheck="false">{"hello": "world"}</textarea>'
            '<fieldset><legend>How</legend>'
            '<label><input type="radio" name="mode" value="runsync" checked> runsync</label> '
            '<label><input type="radio" name="mode" value="run"> run, then poll status</label> '
            '<label><input type="radio" name="mode" value="stream"> run, then stream</label></fieldset>'
            '<button type="submit">Send</button></form>'
            '<p id="send-status" class="note" role="status" aria-live="polite"></p>'
            '<pre id="send-output" class="out" tabindex="0" aria-label="Response"></pre>')


def _requests_section(name: str) -> str:
    options = "".join(f'<option value="{s}">{s or "any status"}</option>' for s in STATUS_FILTER)
    return (f'<section aria-labelledby="requests-h"><h2 id="requests-h">Recent requests</h2>'
            f'<label for="status-filter">Status</label> <select id="status-filter" data-endpoint="{esc(name)}">'
            f'{options}</select>'
            + table(["Request", "Status", "Arrived", "Delay", "Execution", "Worker"], [],
                    caption="Finished requests, newest first", empty="Loading…", id_="requests")
            + '<div id="job-detail" class="detail" hidden tabindex="-1" role="region" aria-label="Request detail">'
              '</div></section>')


def _logs_section(admin: bool) -> str:
    if not admin:
        return ""
    return ('<section aria-labelledby="logs-h"><h2 id="logs-h">Logs</h2><div class="logs">'
            '<div><h3 id="worker-log-h">Worker <span id="worker-log-name">(choose one in the list above)</span></h3>'
            '<pre id="worker-log" class="log" tabindex="0" aria-labelledby="worker-log-h"></pre></div>'
            '<div><h3 id="gateway-log-h">Gateway (this replica)</h3>'
            '<pre id="gateway-log" class="log" tabindex="0" aria-labelledby="gateway-log-h"></pre></div>'
            '</div></section>')


def endpoint_page(request: Request, caller: Caller, csrf: str) -> HTMLResponse:
    rt = runtime_of(request)
    ep = endpoint_of(rt, caller, request.path_params["name"])
    window = S.window_of(request.query_params.get("window"))
    health = rt.health(ep.name)
    message = health["condition"].get("message", "")
    body = (f'<nav class="crumbs" aria-label="Breadcrumb"><a href="/console">Endpoints</a> › {esc(ep.name)}</nav>'
            f'<h1>{esc(ep.name)} {badge(health["status"])}</h1>'
            + (f'<p class="note">{esc(message[:300])}</p>' if message else "")
            + f'<p class="summary">{health["jobs"]["inQueue"]} queued · {health["jobs"]["inProgress"]} running · '
              f'revision {esc(ep.revision)}</p>'
            + '<section aria-labelledby="workers-h"><h2 id="workers-h">Workers</h2>'
            + _workers_table(rt, ep, caller) + '</section>'
            + f'<section aria-labelledby="charts-h"><h2 id="charts-h">Charts</h2>{_window_form(ep.name, window)}'
              f'<div id="charts" class="charts" data-endpoint="{esc(ep.name)}" data-window="{esc(window)}">'
              f'{charts_html(rt, caller, ep, window)}</div></section>'
            + f'<section aria-labelledby="send-h"><h2 id="send-h">Send a request</h2>{_send_form(ep.name)}</section>'
            + _requests_section(ep.name) + _logs_section(caller.admin))
    return page(ep.name, body, who=who(caller), csrf=csrf, gateway=rt.config.name)


def _workers_table(rt: Runtime, ep: EndpointRecord, caller: Caller) -> str:
    return table(["Worker", "State", "Host", "GPU", "Uptime", "Last cold start"], _worker_rows(rt, ep, caller.admin),
                 caption="Workers of this endpoint", empty="No worker: the endpoint has scaled to zero.",
                 id_="workers")


def workers_fragment(request: Request, caller: Caller) -> Response:
    """The workers table alone (the endpoint page refreshes it in place)."""
    rt = runtime_of(request)
    ep = endpoint_of(rt, caller, request.path_params["name"])
    return HTMLResponse(_workers_table(rt, ep, caller), headers={"Cache-Control": "no-store"})


def charts_fragment(request: Request, caller: Caller) -> Response:
    rt = runtime_of(request)
    ep = endpoint_of(rt, caller, request.path_params["name"])
    window = S.window_of(request.query_params.get("window"))
    return HTMLResponse(charts_html(rt, caller, ep, window), headers={"Cache-Control": "no-store"})
