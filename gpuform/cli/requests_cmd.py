"""``gpuform requests ENDPOINT``: the gateway's request history as a table, JSON, or a JSONL trace that
``gpuform simulate --trace`` reads as it is."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuform.cli.common import JsonFlag, globals_of
from gpuform.cli.runtime_cmds import endpoint_admin
from gpuform.errors import GpuformError
from gpuform.gateway.history import BadQuery, parse_since, parse_statuses

DEFAULT_SHOWN = 100


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_line(row: dict[str, Any]) -> dict[str, Any]:
    """One request as a trace line: ``arrival`` (ISO 8601, what the trace reader takes), ``arrival_epoch``,
    ``delay_time`` and ``execution_time`` in seconds (0 for one that never ran: it held no worker), status,
    worker, id and endpoint."""
    return {"arrival": _iso(row["created_at"]), "arrival_epoch": row["created_at"], "delay_time": row["delay"],
            "execution_time": row["execution"] or 0.0, "status": row["status"], "worker": row["worker_id"],
            "id": row["id"], "endpoint": row["endpoint"]}


def _query(status: str | None, since: str | None) -> dict[str, Any]:
    """The query, checked here first so a bad value names the option."""
    query: dict[str, Any] = {}
    try:
        if status:
            query["status"] = ",".join(sorted(parse_statuses(status)))
        found = parse_since(since, time.time())
    except BadQuery as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.param}") from None
    if found is not None:
        query["since"] = repr(found)
    return query


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}s"


def _print_table(rows: list[dict[str, Any]]) -> None:
    """Aligned columns, the id last so a narrow terminal never cuts it (`gpuform status`-style tables would)."""
    lines = [("arrival (UTC)", "status", "delay", "execution", "worker", "key", "id")]
    lines += [(_iso(r["created_at"])[:-1].replace("T", " "), r["status"], _secs(r["delay"]), _secs(r["execution"]),
               r["worker_id"] or "-", r["owner"] or "-", r["id"]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line[:6], widths, strict=True)) + "  " + line[6])
    if not rows:
        print("no finished requests match (the history keeps each for timings.request_history)", file=sys.stderr)


def _export(path: Path, rows: list[dict[str, Any]]) -> None:
    """Oldest first, as a trace reads."""
    text = "".join(json.dumps(trace_line(r)) + "\n" for r in reversed(rows))
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GpuformError(f"cannot write {path}: {exc}", "Pick a writable path for --export.") from None
    print(f"wrote {len(rows)} request(s) to {path} (oldest first); replay them with "
          f"`gpuform simulate ENDPOINT --trace {path}`", file=sys.stderr)


def requests_cmd(ctx: typer.Context, endpoint: str,
                 status: Annotated[str | None, typer.Option("--status", help="Only these statuses: COMPLETED, "
                                                            "FAILED, CANCELLED, TIMED_OUT (comma-separated).")] = None,
                 since: Annotated[str | None, typer.Option("--since", help="Arrived since: a duration back from now "
                                                           "(30m, 1h, 2d) or an ISO 8601 time.")] = None,
                 limit: Annotated[int | None, typer.Option("--limit", min=1, help=f"At most this many, newest first "
                                                           f"(default {DEFAULT_SHOWN}; every match with --export).")]
                 = None,
                 json_out: JsonFlag = False,
                 export: Annotated[Path | None, typer.Option("--export", help="Write JSONL (arrival, delay, "
                                                             "execution, status, worker) that `gpuform simulate "
                                                             "--trace` reads.")] = None) -> None:
    """Finished requests of an endpoint from the gateway's request history: arrival, delay, execution,
    status, worker and API key (never inputs or outputs; `status` fetches a result while it is kept)."""
    query = _query(status, since)
    ws = globals_of(ctx).workspace()
    wanted = limit if limit is not None else (None if export else DEFAULT_SHOWN)
    with endpoint_admin(ws, ws.store.read(), endpoint) as admin:
        rows = list(admin.request_history(endpoint, query, wanted))
    if export is not None:
        _export(export, rows)
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif export is None:
        _print_table(rows)
