"""RunPod-compatible endpoint API: /v2/{endpoint}/run, runsync, status, stream, cancel, retry, purge-queue,
health. Bodies, job states and delayTime/executionTime follow RunPod (reference/runpod.md §1-§2)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gpuform.config.schema import WebhookPolicy
from gpuform.gateway.destinations import Refused, check_url
from gpuform.gateway.http import Caller, HTTPError, read_json, require_endpoint, runtime_of
from gpuform.gateway.jobs import Job
from gpuform.gateway.queue import QueueFull, Quota
from gpuform.gateway.states import TERMINAL, JobStatus

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord, Runtime

MIN_WAIT_MS, MAX_WAIT_MS = 1000, 300_000
MAX_POLICY_MS = 7 * 86_400_000
MIN_POLICY_MS = {"executionTimeout": 5_000, "ttl": 10_000}  # RunPod's minimums
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def job_options(ep: EndpointRecord, body: dict[str, Any], webhooks: WebhookPolicy) -> dict[str, Any]:
    """execution timeout, ttl, low priority and webhook from the request's ``policy`` and ``webhook``."""
    policy = body.get("policy") or {}
    if not isinstance(policy, dict):
        raise HTTPError(400, '"policy" must be an object such as {"executionTimeout": 60000, "ttl": 3600000}')
    options: dict[str, Any] = {"execution_timeout": ep.spec.execution_timeout, "ttl": ep.spec.ttl,
                               "low_priority": bool(policy.get("lowPriority", False))}
    for key, field in (("executionTimeout", "execution_timeout"), ("ttl", "ttl")):
        if key in policy:
            value = policy[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or not (
                    MIN_POLICY_MS[key] <= value <= MAX_POLICY_MS):
                raise HTTPError(400, f"policy.{key} must be milliseconds between {MIN_POLICY_MS[key]} and "
                                     f"{MAX_POLICY_MS}")
            options[field] = value / 1000
    webhook = body.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str) or len(webhook) > 2048:
            raise HTTPError(400, '"webhook" must be an http(s) URL of at most 2048 characters')
        try:
            check_url(webhook, webhooks)
        except Refused as exc:
            raise HTTPError(400, str(exc)) from None
    options["webhook"] = webhook
    return options


def submit(rt: Runtime, caller: Caller, ep: EndpointRecord, payload: Any, *, sync: bool,
           idempotency_key: str | None = None, **options: Any) -> Job:
    """Queue a job of ``caller`` on ``ep`` (429 with Retry-After when its queue or the key's quota is full)."""
    key = caller.options
    quota = Quota(key.max_open_jobs, key.max_queued) if key is not None else Quota()
    try:
        job, _ = rt.queue.submit(ep.name, payload, sync=sync, idempotency_key=idempotency_key,
                                 max_queue=ep.spec.max_queue, owner=caller.owner, quota=quota, **options)
    except QueueFull as exc:
        raise HTTPError(429, f"{exc}; retry later", {"Retry-After": str(exc.retry_after)}) from None
    rt.metrics.submitted.labels(ep.name).inc()
    return job


async def _submit(request: Request, sync: bool) -> tuple[Runtime, Job]:
    caller, ep = require_endpoint(request)
    rt = runtime_of(request)
    limit = rt.config.gateway.max_payload_runsync if sync else rt.config.gateway.max_payload_run
    body = await read_json(request, limit, empty={})
    if not isinstance(body, dict) or "input" not in body:
        raise HTTPError(400, 'the body must be a JSON object with an "input" field: {"input": {...}}')
    options = job_options(ep, body, rt.config.gateway.webhooks)
    job = submit(rt, caller, ep, body["input"], sync=sync, idempotency_key=request.headers.get("idempotency-key"),
                 **options)
    return rt, job


async def run(request: Request) -> Response:
    _, job = await _submit(request, sync=False)
    return JSONResponse({"id": job.id, "status": job.status})


async def runsync(request: Request) -> Response:
    rt, job = await _submit(request, sync=True)
    wait = rt.config.timings.runsync_wait
    if "wait" in request.query_params:
        try:
            wait = min(max(int(request.query_params["wait"]), MIN_WAIT_MS), MAX_WAIT_MS) / 1000
        except ValueError:
            raise HTTPError(400, "?wait must be milliseconds between 1000 and 300000") from None
    await rt.queue.wait_done(job, wait)
    view = job.view()
    if request.headers.get("x-gpuform-timings"):
        view["timestamps"] = {"created": job.created_at, "started": job.started_at, "completed": job.completed_at}
    return JSONResponse(view)


def _job(request: Request) -> tuple[Runtime, Job]:
    """The job in the path, if it is on this endpoint and the caller may see it (its own, unless shared)."""
    caller, ep = require_endpoint(request)
    rt = runtime_of(request)
    job = rt.queue.get(request.path_params["job_id"])
    if job is None or job.endpoint != ep.name or not caller.may_see(job):
        raise HTTPError(404, f"no job {request.path_params['job_id']!r} on endpoint {ep.name!r} "
                             "(finished results are kept for 30 minutes, 1 minute for /runsync)")
    return rt, job


async def status(request: Request) -> Response:
    rt, job = _job(request)
    if "ttl" in request.query_params and request.query_params["ttl"].isdigit():
        job.ttl = (rt.queue.clock() - job.created_at) + int(request.query_params["ttl"]) / 1000
    return JSONResponse(job.view(rt.clock()))


async def stream(request: Request) -> Response:
    rt, job = _job(request)
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(_sse(request, job), media_type="text/event-stream", headers=SSE_HEADERS)
    chunks = rt.queue.drain_chunks(job)
    out: dict[str, Any] = {"id": job.id, "status": job.status, "stream": [{"output": c} for c in chunks]}
    if job.status in (JobStatus.FAILED, JobStatus.TIMED_OUT) and job.error is not None:
        out["error"] = job.error
    return JSONResponse(out)


async def _sse(request: Request, job: Job) -> AsyncIterator[bytes]:
    """Chunks as server-sent events the moment they arrive, then the final status."""
    async with aclosing(runtime_of(request).queue.follow(job, 15)) as changes:
        async for chunks in changes:
            if chunks is None:
                yield b": keep-alive\n\n"
            for chunk in chunks or ():
                yield b"data: " + json.dumps({"output": chunk}).encode() + b"\n\n"
            if job.status not in TERMINAL and await request.is_disconnected():
                return
    if job.status in TERMINAL:
        yield b"event: status\ndata: " + json.dumps(job.view()).encode() + b"\n\n"


async def cancel(request: Request) -> Response:
    rt, job = _job(request)
    job = rt.queue.cancel(job.id) or job
    return JSONResponse({"id": job.id, "status": job.status})


async def retry(request: Request) -> Response:
    rt, job = _job(request)
    if job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
        raise HTTPError(400, f"only FAILED or TIMED_OUT jobs can be retried; job {job.id} is {job.status}")
    job = rt.queue.retry(job.id) or job
    return JSONResponse({"id": job.id, "status": job.status})


async def purge_queue(request: Request) -> Response:
    caller, ep = require_endpoint(request)
    owner = None if caller.shared else caller.owner
    return JSONResponse({"removed": runtime_of(request).queue.purge(ep.name, owner), "status": "completed"})


async def health(request: Request) -> Response:
    _, ep = require_endpoint(request)
    return JSONResponse(runtime_of(request).health(ep.name))


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
