"""Runtime commands: gateway (foreground, backup, restore), status, logs (workers' or the gateway's), usage."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from gpuform.cli.common import JsonFlag, globals_of, no_gateway, out_console
from gpuform.cli.gateway_cmds import gateway_app
from gpuform.engine.context import Workspace
from gpuform.errors import GatewayError, GpuformError
from gpuform.gateway.client import AdminClient
from gpuform.plan.cost import format_cost
from gpuform.provider import GatewayHost, gateway_host
from gpuform.state.model import ResourceState, State


def _admins(ws: Workspace, state: State) -> list[tuple[str, AdminClient]]:
    out = []
    for res in state.resources.values():
        if res.kind == "gateway":
            key = ws.admin_key(res.name, None, create=False)
            out.append((res.name, AdminClient(str(res.attributes["advertise_url"]), key,
                                              tls=ws.client_tls(res.attributes))))
    if not out:
        raise no_gateway(ws)
    return out


def endpoint_admin(ws: Workspace, state: State, endpoint: str) -> AdminClient:
    """The admin client of the gateway ``endpoint`` is registered with (the first gateway when the state
    does not say: an endpoint removed from the configuration keeps its history there)."""
    admins = _admins(ws, state)
    res = state.resources.get(f"endpoint.{endpoint}")
    wanted = res.attributes.get("gateway") if res is not None else None
    return next((admin for name, admin in admins if name == wanted), admins[0][1])


def status_cmd(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Hosts, GPUs, volumes, endpoints and their workers, as the gateway sees them now."""
    ws = globals_of(ctx).workspace()
    state = ws.store.read()
    report: dict[str, Any] = {"pools": {}, "volumes": {}, "gateways": {}}
    for res in sorted(state.resources.values(), key=lambda r: r.address):
        if res.kind == "pool":
            report["pools"][res.name] = res.computed.get("hosts", [])
        elif res.kind == "volume":
            report["volumes"][res.name] = {"path": res.attributes.get("path"), "files": res.attributes.get("files"),
                                           "bytes": res.attributes.get("bytes"), "hosts": res.computed.get("hosts")}
        elif res.kind == "endpoint":
            report.setdefault("endpoints", {})[res.name] = {
                k: res.computed[k] for k in ("image", "hosts_with_image", "warm_containers", "hosts_ready", "python")
                if k in res.computed}
    for name, admin in _admins(ws, state):
        with admin:
            try:
                report["gateways"][name] = admin.status()
            except GatewayError as exc:
                report["gateways"][name] = {"error": exc.message}
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    _print_status(report)


def _print_status(report: dict[str, Any]) -> None:
    hosts = Table("pool", "host", "reachable", "GPUs", title="Hosts", title_justify="left")
    for pool, entries in report["pools"].items():
        for h in entries:
            gpus = ", ".join(f"{g['index']}:{g['type']}" for g in h.get("gpus") or []) or "cpu"
            reach = "yes" if h.get("reachable") else f"no: {h.get('reason', '')}"
            hosts.add_row(pool, h.get("name", ""), reach + (" (cordoned)" if h.get("cordoned") else ""), gpus)
    out_console.print(hosts)
    if report["volumes"]:
        vols = Table("volume", "path", "files", "bytes", "hosts", title="Volumes", title_justify="left")
        for name, v in report["volumes"].items():
            vols.add_row(name, str(v["path"]), str(v["files"]), str(v["bytes"]), ", ".join(v.get("hosts") or {}))
        out_console.print(vols)
    for name, info in (report.get("endpoints") or {}).items():
        if info.get("hosts_with_image") is not None:
            warm = ", ".join(f"{h}: {n}" for h, n in (info.get("warm_containers") or {}).items() if n)
            out_console.print(f"endpoint {name}: image {info.get('image', '')} on "
                              f"{', '.join(info['hosts_with_image']) or 'no host'}"
                              + (f"; kept containers for fast restarts: {warm}" if warm else ""), markup=False)
    for gw, body in report["gateways"].items():
        if "error" in body:
            out_console.print(f"[red]gateway.{gw}: {body['error']}[/red]")
            continue
        _print_gateway(gw, body)


def plain_table(title: str | None, *headers: str) -> Table:
    """Cells never cut (names, amounts); headers break at their newlines, so tables fit 80 columns.
    Footnotes under the tables say what the short headers mean where it is not plain."""
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, no_wrap=True)
    return table


def _print_gateway(gw: str, body: dict[str, Any]) -> None:
    eps = plain_table(f"Endpoints on gateway.{gw}", "endpoint", "status", "workers\ni/r/s", "jobs\nq/r", "desired",
                 "delay\np50", "cold\np50", "spent\ntoday")
    workers = Table("worker", "endpoint", "state", "host", "gpu", "up", title="Workers", title_justify="left")
    notes: list[str] = []
    now = time.time()
    for name, ep in body.get("endpoints", {}).items():
        w, jobs = ep["workers"], ep["jobs"]
        delay = ep["metrics"]["delay"]["p50"]
        cold = ep["metrics"]["cold_start"]["p50"]
        eps.add_row(name, ep["status"], f"{w['idle']}/{w['running']}/{w['initializing']}",
                    f"{jobs['inQueue']}/{jobs['inProgress']}", str(ep.get("desired_workers")),
                    f"{delay:.2f}s" if delay is not None else "-", f"{cold:.1f}s" if cold is not None else "-",
                    format_cost(ep.get("spent_today")))
        cond = ep.get("condition") or {}
        if cond.get("status", "OK") != "OK":
            notes.append(f"{name}: {cond['status']}: {cond.get('message', '')}")
            if cond.get("log_tail"):
                notes.append("  last log lines:\n    " + cond["log_tail"].replace("\n", "\n    "))
        notes += [f"{name}: {n}" for n in ep.get("scaling_notes") or []]
        cold = cold_start_line(ep.get("worker_list") or [])
        if cold:
            notes.append(f"{name}: last cold start: {cold}")
        for wk in ep.get("worker_list") or []:
            up = f"{now - wk['requested_at']:.0f}s" if wk.get("requested_at") and not wk.get("stopped_at") else "-"
            workers.add_row(wk["id"], name, wk["state"], wk.get("host") or "-", wk.get("gpu_type") or "-", up)
    out_console.print(eps)
    out_console.print("workers: idle/running/starting; jobs: queued/running", style="dim")
    out_console.print(workers)
    for note in [*notes, *_leader_note(gw, body.get("replica") or {})]:
        out_console.print(note, markup=False)


def _leader_note(gw: str, replica: dict[str, Any]) -> list[str]:
    """Who leads the gateway's replicas (a postgres store), as the store records it."""
    leader = replica.get("current_leader")
    if replica.get("mode") != "postgres" or not leader:
        return []
    return [f"gateway.{gw}: replica {leader['replica_id']} leads (epoch {leader['epoch']}); this answer came from "
            f"{replica.get('replica_id')}"]


PHASE_ORDER = ["job_queued", "start_requested", "process_started", "process_up", "vllm_launch", "vllm_ready",
               "model_loaded", "runtime_ready", "ready", "first_job", "first_token"]


def cold_start_line(workers: list[dict[str, Any]]) -> str:
    """The most recent worker's start-up phases, in seconds from start requested."""
    timed = [w for w in workers if (w.get("timeline") or {}).get("start_requested")]
    if not timed:
        return ""
    timeline = max(timed, key=lambda w: w["timeline"]["start_requested"])["timeline"]
    base = timeline["start_requested"]
    phases = [p for p in PHASE_ORDER if p in timeline]
    return ", ".join(f"{p} {timeline[p] - base:+.2f}s" for p in phases)


def usage_cmd(ctx: typer.Context, json_out: JsonFlag = False,
              by_key: Annotated[bool, typer.Option("--by-key", "-by-key", help="Jobs and execution time per API "
                                                   "key instead.")] = False) -> None:
    """Billed GPU-seconds and cost per endpoint and UTC day, from the gateway's ledger (or per API key)."""
    ws = globals_of(ctx).workspace()
    rows: list[dict[str, Any]] = []
    for _name, admin in _admins(ws, ws.store.read()):
        with admin:
            rows += admin.get("/admin/usage")["by_key" if by_key else "usage"]
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if by_key:
        keys = plain_table(None, "day (UTC)", "API key", "endpoint", "jobs", "failed", "execution\nseconds")
        for r in rows:
            keys.add_row(r["day"], r["owner"] or "(unrecorded)", r["endpoint"], str(r["jobs"]), str(r["failed"]),
                         f"{r['execution_seconds']:.1f}")
        out_console.print(keys)
        return
    table = plain_table(None, "day (UTC)", "endpoint", "gpu type", "workers", "worker\nseconds", "GPU\nseconds", "cost")
    for r in rows:
        table.add_row(r["day"], r["endpoint"], r["gpu_type"], str(r["workers"]), f"{r['worker_seconds']:.1f}",
                      f"{r['gpu_seconds']:.1f}", format_cost(r["cost"]))
    out_console.print(table)


def logs_cmd(ctx: typer.Context,
             endpoint: Annotated[str | None, typer.Argument(help="The endpoint whose workers' logs to show.")] = None,
             worker: Annotated[str | None, typer.Option("--worker", help="One worker's log.")] = None,
             gateway: Annotated[bool, typer.Option("--gateway", help="The gateway's own log instead (read from "
                                                   "its host through the pool's provider).")] = False,
             follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
             tail: Annotated[int, typer.Option("--tail", min=1, help="Lines to show.")] = 100) -> None:
    """Print the logs of an endpoint's workers (running ones, and recent crashes), or with --gateway the
    gateway's own log."""
    if gateway == (endpoint is not None):
        raise typer.BadParameter("give an ENDPOINT, or --gateway for the gateway's own log (not both)",
                                 param_hint="ENDPOINT / --gateway")
    ws = globals_of(ctx).workspace()
    state = ws.store.read()
    if gateway:
        _gateway_logs(ws, state, follow, tail)
        return
    assert endpoint is not None
    _worker_logs(ws, state, endpoint, worker, follow, tail)


def _gateway_logs(ws: Workspace, state: State, follow: bool, tail: int) -> None:
    """Each gateway's log, through the provider of the pool it runs on (it answers even when the gateway
    does not)."""
    from gpuform.gateway.replicas import recorded, replica_key

    gateways = [(res, replica_key(res.name, int(row["id"][1:])), f"gateway.{res.name}" + (
                 f" {row['id']}" if len(recorded(res.computed, "")) > 1 else ""))
                for res in state.resources.values() if res.kind == "gateway" for row in recorded(res.computed, "")]
    if not gateways:
        raise no_gateway(ws)
    seen: dict[str, list[str]] = {}
    try:
        while True:
            for res, key, label in gateways:
                lines = _gateway_host(ws, state, res).gateway_logs(key, tail).splitlines()
                if not lines and not follow:
                    print(f"[{label}] (no output yet)", file=sys.stderr)
                for line in _new_lines(seen.get(label, []), lines):
                    print(f"[{label}] {line}" if len(gateways) > 1 else line, flush=True)
                seen[label] = lines
            if not follow:
                return
            time.sleep(1.0)
    finally:
        ws.close()


def _gateway_host(ws: Workspace, state: State, res: ResourceState) -> GatewayHost:
    pool = str(res.attributes["pool"])
    pool_res = state.resources.get(f"pool.{pool}")
    if pool_res is None:
        raise GpuformError(f"gateway.{res.name} runs on pool.{pool}, which is not in the state",
                           "Run `gpuform apply` to create it.")
    return gateway_host(ws.provider(pool, pool_res.attributes, state.lineage), pool)


def _worker_logs(ws: Workspace, state: State, endpoint: str, worker: str | None, follow: bool, tail: int) -> None:
    (_, admin), *_ = _admins(ws, state)
    seen: dict[str, list[str]] = {}
    with admin:
        admin.get(f"/admin/endpoints/{endpoint}/status")  # an unknown endpoint is an error, not silence
        while True:
            listed = admin.get("/admin/workers", endpoint=endpoint)["workers"]
            ids = [w["id"] for w in listed if worker in (None, w["id"])]
            if worker and worker not in ids:
                raise GpuformError(f"no worker {worker} on endpoint {endpoint}", "See `gpuform status`.")
            if not ids and not follow:
                print(f"endpoint {endpoint} has no workers now (it scales to zero when idle); "
                      "send a request to start one, or see `gpuform status`", file=sys.stderr)
            for wid in ids:
                lines = admin.get(f"/admin/workers/{wid}/logs", tail=tail)["log"].splitlines()
                if not lines and not follow:
                    print(f"[{wid}] (no output yet)", file=sys.stderr)
                for line in _new_lines(seen.get(wid, []), lines):
                    print(f"[{wid}] {line}" if not worker else line, flush=True)
                seen[wid] = lines
            if not follow:
                return
            time.sleep(1.0)


def _new_lines(before: list[str], now: list[str]) -> list[str]:
    """Lines of ``now`` after the end of ``before`` (both are tails of the same growing log)."""
    if not before:
        return now
    anchor = before[-3:]
    for start in range(len(now) - len(anchor), -1, -1):
        if now[start:start + len(anchor)] == anchor:
            return now[start + len(anchor):]
    return now


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")
    app.command("status")(status_cmd)
    app.command("usage")(usage_cmd)
    app.command("logs")(logs_cmd)

