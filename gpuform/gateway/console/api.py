"""JSON for the console's scripts, on the session cookie: a request's detail (input, output or error), a
worker's log and the gateway's log (admin only). The RunPod routes (run, runsync, status, stream, cancel,
requests) are served to the console under ``/console/api/v2/...`` by the very same handlers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gpuform.gateway.http import HTTPError, require_console, require_endpoint, runtime_of

MAX_SHOWN = 64 << 10


def _trimmed(value: Any) -> Any:
    """A value to show; a very large one as the start of its text (the page is not the place for megabytes)."""
    text = json.dumps(value, default=str)
    if len(text) <= MAX_SHOWN:
        return value
    return {"_truncated": f"{len(text)} bytes; the first {MAX_SHOWN} shown", "start": text[:MAX_SHOWN]}


async def job_detail(request: Request) -> Response:
    """A request the caller may see, with its input and its output or error while its result is kept."""
    caller, ep = require_endpoint(request)
    rt = runtime_of(request)
    job_id = request.path_params["job_id"]
    job = await asyncio.to_thread(rt.queue.get, job_id)
    if job is None or job.endpoint != ep.name or not caller.may_see(job):
        raise HTTPError(404, f"request {job_id!r}: its result is no longer kept (or it is not yours); the "
                             "history keeps only its times and status")
    payload = job.input
    if payload is None and job.input_stored:
        payload = await asyncio.to_thread(rt.store.jobs.input_of, job.id)
    view = job.view(rt.clock())
    return JSONResponse({**view, "input": _trimmed(payload), "output": _trimmed(view.get("output")),
                         "worker_id": job.worker_id, "created_at": job.created_at, "owner": job.owner})


def _lines(request: Request, name: str, default: int) -> int:
    try:
        return max(1, min(2000, int(request.query_params.get(name, str(default)))))
    except ValueError:
        raise HTTPError(400, f"?{name} must be a whole number") from None


async def worker_log(request: Request) -> Response:
    if not require_console(request).admin:
        raise HTTPError(403, "workers' logs are for the admin key")
    rt = runtime_of(request)
    worker = rt.fleet.records.get(request.path_params["worker_id"])
    if worker is None:
        raise HTTPError(404, f"no worker {request.path_params['worker_id']} is known to this gateway replica")
    text = worker.log_tail
    if worker.info is not None:
        text = await asyncio.to_thread(rt.fleet.providers(worker.pool).worker_logs, worker.info,
                                       _lines(request, "tail", 200))
    return JSONResponse({"worker": worker.id, "state": worker.state, "log": text})


async def gateway_log(request: Request) -> Response:
    if not require_console(request).admin:
        raise HTTPError(403, "the gateway's log is for the admin key")
    try:
        after = max(0, int(request.query_params.get("after", "0")))
    except ValueError:
        raise HTTPError(400, "?after must be the number of the last line read") from None
    last, lines = request.app.state.log_tail.after(after)
    return JSONResponse({"last": last, "lines": lines})
