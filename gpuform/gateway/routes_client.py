"""RunPod-compatible endpoint API: /v2/{endpoint}/run, runsync, status, stream, cancel, retry, purge-queue,
health. Bodies, job states and delayTime/executionTime follow RunPod (reference/runpod.md §1-§2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gpuform.gateway.auth import presented_key
from gpuform.gateway.errors import json_error
from gpuform.gateway.jobs import FAILED, TERMINAL, TIMED_OUT, Job
from gpuform.gateway.queue import QueueFull

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord, Runtime

MIN_WAIT_MS, MAX_WAIT_MS = 1000, 300_000
MIN_POLICY_MS, MAX_POLICY_MS = 5_000, 7 * 86_400_000


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def endpoint_for(request: Request) -> tuple[Runtime, EndpointRecord | None, Response | None]:
    """The endpoint named in the path, after checking the client key is allowed there."""
    rt = runtime_of(request)
    name = request.path_params["endpoint"]
    key = presented_key(request)
    key_name = rt.keys.client_name(key)
    if key_name is None and not rt.keys.is_admin(key):
        return rt, None, json_error(401, "missing or invalid API key (send Authorization: Bearer KEY)")
    ep = rt.endpoints.get(name)
    if ep is None or ep.deleting:
        return rt, None, json_error(404, f"no endpoint named {name!r} on this gateway")
    if key_name is not None and not ep.allows(key_name):
        return rt, None, json_error(403, f"API key {key_name!r} is not allowed on endpoint {name!r}")
    return rt, ep, None


async def read_json(request: Request, limit: int) -> tuple[Any, Response | None]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None, _too_large(int(declared), limit)
    body = await request.body()
    if len(body) > limit:
        return None, _too_large(len(body), limit)
    try:
        return json.loads(body or b"{}"), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, json_error(400, f"the request body is not valid JSON: {exc}")


def _too_large(size: int, limit: int) -> Response:
    return json_error(413, f"request body of {size} bytes exceeds this route's limit of {limit} bytes; "
                           "send large inputs by reference (a URL) instead")


def _job_options(ep: EndpointRecord, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """execution timeout, ttl, low priority and webhook from the request's ``policy`` and ``webhook``."""
    policy = body.get("policy") or {}
    if not isinstance(policy, dict):
        return {}, '"policy" must be an object such as {"executionTimeout": 60000, "ttl": 3600000}'
    options: dict[str, Any] = {"execution_timeout": float(ep.spec.get("execution_timeout") or 600),
                               "ttl": float(ep.spec.get("ttl") or 86400),
                               "low_priority": bool(policy.get("lowPriority", False))}
    for key, field in (("executionTimeout", "execution_timeout"), ("ttl", "ttl")):
        if key in policy:
            value = policy[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or not (
                    MIN_POLICY_MS <= value <= MAX_POLICY_MS):
                return {}, f"policy.{key} must be milliseconds between {MIN_POLICY_MS} and {MAX_POLICY_MS}"
            options[field] = value / 1000
    webhook = body.get("webhook")
    if webhook is not None and not (isinstance(webhook, str) and webhook.startswith(("http://", "https://"))):
        return {}, '"webhook" must be an http(s) URL'
    options["webhook"] = webhook
    return options, None


async def _submit(request: Request, sync: bool) -> tuple[Runtime, Job | None, Response | None]:
    rt, ep, denied = endpoint_for(request)
    if denied or ep is None:
        return rt, None, denied
    limit = rt.config.gateway.max_payload_runsync if sync else rt.config.gateway.max_payload_run
    body, bad = await read_json(request, limit)
    if bad:
        return rt, None, bad
    if not isinstance(body, dict) or "input" not in body:
        return rt, None, json_error(400, 'the body must be a JSON object with an "input" field: {"input": {...}}')
    options, problem = _job_options(ep, body)
    if problem:
        return rt, None, json_error(400, problem)
    try:
        job, _ = rt.queue.submit(ep.name, body["input"], sync=sync, idempotency_key=request.headers.get(
            "idempotency-key"), max_queue=ep.spec.get("max_queue"), **options)
    except QueueFull as exc:
        return rt, None, json_error(429, f"{exc}; retry later", {"Retry-After": str(exc.retry_after)})
    rt.metrics.submitted.labels(ep.name).inc()
    return rt, job, None


async def run(request: Request) -> Response:
    _, job, problem = await _submit(request, sync=False)
    if problem or job is None:
        return problem or json_error(500, "no job")
    return JSONResponse({"id": job.id, "status": job.status})


async def runsync(request: Request) -> Response:
    rt, job, problem = await _submit(request, sync=True)
    if problem or job is None:
        return problem or json_error(500, "no job")
    wait = rt.config.timings.runsync_wait
    if "wait" in request.query_params:
        try:
            wait = min(max(int(request.query_params["wait"]), MIN_WAIT_MS), MAX_WAIT_MS) / 1000
        except ValueError:
            return json_error(400, "?wait must be milliseconds between 1000 and 300000")
    await rt.queue.wait_done(job, wait)
    view = job.view()
    if request.headers.get("x-gpuform-timings"):
        view["timestamps"] = {"created": job.created_at, "started": job.started_at, "completed": job.completed_at}
    return JSONResponse(view)


def _job(request: Request) -> tuple[Runtime, Job | None, Response | None]:
    rt, ep, denied = endpoint_for(request)
    if denied or ep is None:
        return rt, None, denied
    job = rt.queue.get(request.path_params["job_id"])
    if job is None or job.endpoint != ep.name:
        return rt, None, json_error(404, f"no job {request.path_params['job_id']!r} on endpoint {ep.name!r} "
                                         "(finished results are kept for 30 minutes, 1 minute for /runsync)")
    return rt, job, None


async def status(request: Request) -> Response:
    rt, job, problem = _job(request)
    if problem or job is None:
        return problem or json_error(404, "no job")
    if "ttl" in request.query_params and request.query_params["ttl"].isdigit():
        job.ttl = (rt.queue.clock() - job.created_at) + int(request.query_params["ttl"]) / 1000
    return JSONResponse(job.view())


async def stream(request: Request) -> Response:
    rt, job, problem = _job(request)
    if problem or job is None:
        return problem or json_error(404, "no job")
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(_sse(request, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    chunks = rt.queue.drain_chunks(job)
    out: dict[str, Any] = {"id": job.id, "status": job.status, "stream": [{"output": c} for c in chunks]}
    if job.status in (FAILED, TIMED_OUT) and job.error is not None:
        out["error"] = job.error
    return JSONResponse(out)


async def _sse(request: Request, job: Job) -> AsyncIterator[bytes]:
    """Chunks as server-sent events the moment they arrive, then the final status."""
    sent = 0
    while True:
        event = job.chunk_event()
        event.clear()
        for chunk in job.chunks[sent:]:
            yield b"data: " + json.dumps({"output": chunk}).encode() + b"\n\n"
        sent = len(job.chunks)
        if job.status in TERMINAL:
            yield b"event: status\ndata: " + json.dumps(job.view()).encode() + b"\n\n"
            return
        try:
            await asyncio.wait_for(event.wait(), timeout=15)
        except TimeoutError:
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return


async def cancel(request: Request) -> Response:
    rt, job, problem = _job(request)
    if problem or job is None:
        return problem or json_error(404, "no job")
    rt.queue.cancel(job.id)
    return JSONResponse({"id": job.id, "status": job.status})


async def retry(request: Request) -> Response:
    rt, job, problem = _job(request)
    if problem or job is None:
        return problem or json_error(404, "no job")
    if job.status not in (FAILED, TIMED_OUT):
        return json_error(400, f"only FAILED or TIMED_OUT jobs can be retried; job {job.id} is {job.status}")
    rt.queue.retry(job.id)
    return JSONResponse({"id": job.id, "status": job.status})


async def purge_queue(request: Request) -> Response:
    rt, ep, denied = endpoint_for(request)
    if denied or ep is None:
        return denied or json_error(404, "no endpoint")
    return JSONResponse({"removed": rt.queue.purge(ep.name), "status": "completed"})


async def health(request: Request) -> Response:
    rt, ep, denied = endpoint_for(request)
    if denied or ep is None:
        return denied or json_error(404, "no endpoint")
    return JSONResponse(rt.health(ep.name))


ROUTES = [
    Route("/v2/{endpoint}/run", run, methods=["POST"]),
    Route("/v2/{endpoint}/runsync", runsync, methods=["POST"]),
    Route("/v2/{endpoint}/status/{job_id}", status, methods=["GET", "POST"]),
    Route("/v2/{endpoint}/stream/{job_id}", stream, methods=["GET", "POST"]),
    Route("/v2/{endpoint}/cancel/{job_id}", cancel, methods=["POST"]),
    Route("/v2/{endpoint}/retry/{job_id}", retry, methods=["POST"]),
    Route("/v2/{endpoint}/purge-queue", purge_queue, methods=["POST"]),
    Route("/v2/{endpoint}/health", health, methods=["GET"]),
]
