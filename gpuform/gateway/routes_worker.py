"""Worker protocol: RunPod's job-take / job-take-batch / job-stop / job-done / job-stream / ping, plus
worker-event (cold-start phases). See docs/runpod-protocol.md for what the runpod SDK expects.

Worker tokens (``RUNPOD_AI_API_KEY``) are valid here only, for the worker they were minted for.
Results are parsed as JSON whatever their content type (the SDK sends JSON as form-encoded), and made safe
to store and serve (:func:`gpuform.gateway.jsonbody.loads_lenient`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuform.gateway.http import HTTPError, read_body, require_worker, runtime_of
from gpuform.gateway.jsonbody import BadJSON, loads_lenient
from gpuform.gateway.states import WorkerState

STOP_HOLD = 20.0
MAX_BATCH = 64
NO_CONTENT = 204
ACK_HOLD = 0.05  # how long a result's answer may wait for the worker's next job


async def take(request: Request) -> Response:
    worker = require_worker(request)
    rt = runtime_of(request)
    count = 1
    batch = "/job-take-batch/" in request.url.path
    if batch:
        try:
            count = max(1, min(int(request.query_params.get("batch_size", "1")), MAX_BATCH))
        except ValueError:
            count = 1
    if rt.draining:  # a stopping replica: the worker takes from another one (its failover moves on a 503)
        raise HTTPError(503, "this gateway replica is stopping; take from another", headers={"Retry-After": "1"})
    rt.fleet.contact(worker, rt.clock())
    ep = rt.endpoints.get(worker.endpoint)
    hold = rt.config.timings.take_timeout

    def eligible() -> bool:
        return not (ep is None or ep.deleting or worker.stale or not worker.live or worker.waking)

    if not eligible():
        await asyncio.sleep(min(hold, 5.0))  # no work for this worker; don't let it spin
        return Response(status_code=NO_CONTENT)
    limit = ep.spec.worker.concurrency if ep is not None else None
    jobs = await rt.queue.take(worker.endpoint, worker.id, count, hold, request.is_disconnected, eligible, limit)
    if not jobs:
        return Response(status_code=NO_CONTENT)
    payloads = [j.worker_payload() for j in jobs]
    return JSONResponse(payloads if batch else payloads[0])


async def stop_signals(request: Request) -> Response:
    worker = require_worker(request)
    rt = runtime_of(request)
    hold = 0.0 if worker.state == WorkerState.STOPPING else min(STOP_HOLD, rt.config.timings.take_timeout)
    ids = await rt.queue.wait_stops(worker.id, hold)  # a draining worker gets its stops without a wait
    control = rt.queue.take_control(worker.id)
    if control:
        return JSONResponse({"jobsToStop": ids, "control": control})
    return JSONResponse({"jobsToStop": ids}) if ids else Response(status_code=NO_CONTENT)


async def _body(request: Request) -> tuple[dict[str, Any], int]:
    """The worker's JSON body (made safe to store and serve) and its size in bytes."""
    settings = runtime_of(request).config.gateway
    raw = await read_body(request, settings.max_payload_runsync)
    try:
        data = loads_lenient(raw, settings.limits.json_depth) if raw.strip() else {}
    except BadJSON as exc:
        raise HTTPError(400, f"the body is not JSON: {exc}") from None
    return (data if isinstance(data, dict) else {"output": data}), len(raw)


async def done(request: Request) -> Response:
    worker = require_worker(request)
    rt = runtime_of(request)
    body, _ = await _body(request)
    job = rt.queue.result(request.path_params["job_id"], worker.id, body)
    rt.fleet.contact(worker, rt.clock())
    if job is not None:
        rt.fleet.first_output(worker)
    if job is not None and job.terminal and not rt.queue.held(job.endpoint, worker.id):
        # An idle worker that polls for more while it works (the runpod SDK with concurrency_modifier) looks at
        # its own queue only when a job's post returns, or 0.1 s later: answer once its next job is on its way.
        await rt.queue.next_handed(worker.id, ACK_HOLD)
    return JSONResponse({"accepted": job is not None})


async def stream_chunk(request: Request) -> Response:
    worker = require_worker(request)
    rt = runtime_of(request)
    body, size = await _body(request)
    job = rt.queue.chunk(request.path_params["job_id"], worker.id, body.get("output"), size)
    if job is not None:
        rt.fleet.first_output(worker)
    return JSONResponse({"accepted": job is not None})


async def ping(request: Request) -> Response:
    worker = require_worker(request)
    rt = runtime_of(request)
    if request.query_params.get("status") == "unhealthy":
        check = request.query_params.get("check", "?")
        reason = request.query_params.get("reason", "")
        worker.log_tail = f"fitness check {check} failed: {reason}"
        return JSONResponse({"ok": True})
    rt.fleet.contact(worker, rt.clock())
    held = [j for j in request.query_params.get("job_id", "").split(",") if j]
    rt.queue.renew(worker.id, held)
    return JSONResponse({"ok": True})


async def worker_event(request: Request) -> Response:
    """A worker reports a start-up phase: {"phase": "runtime_ready", "at": <unix time>}."""
    worker = require_worker(request)
    rt = runtime_of(request)
    body, _ = await _body(request)
    phase = str(body.get("phase", ""))[:64]
    if phase:
        at = body.get("at")
        rt.fleet.worker_event(worker, phase, float(at) if isinstance(at, int | float) else rt.clock())
    return JSONResponse({"ok": True})


ROUTES = [
    Route("/v2/{endpoint}/job-take/{worker_id}", take, methods=["GET"]),
    Route("/v2/{endpoint}/job-take-batch/{worker_id}", take, methods=["GET"]),
    Route("/v2/{endpoint}/job-stop/{worker_id}", stop_signals, methods=["GET"]),
    Route("/v2/{endpoint}/job-done/{worker_id}/{job_id}", done, methods=["POST"]),
    Route("/v2/{endpoint}/job-stream/{worker_id}/{job_id}", stream_chunk, methods=["POST"]),
    Route("/v2/{endpoint}/ping/{worker_id}", ping, methods=["GET"]),
    Route("/v2/{endpoint}/worker-event/{worker_id}", worker_event, methods=["POST"]),
]
