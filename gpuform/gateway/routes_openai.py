"""OpenAI-compatible routes. Calls become jobs shaped ``{"openai_route": "/v1/…", "openai_input": {…}}`` (as on
RunPod); with ``stream: true`` the worker's chunks are written to the client as SSE the moment they arrive.

- ``/v2/{endpoint}/openai/v1/...``: one endpoint;
- ``/v1/...``: routed by the request's ``model`` to the endpoint serving it;
- ``GET .../models`` answers from the declared model names without waking a worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gpuform.gateway.auth import presented_key
from gpuform.gateway.jobs import COMPLETED, TERMINAL, Job
from gpuform.gateway.queue import QueueFull
from gpuform.gateway.routes_client import endpoint_for, read_json, runtime_of

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord, Runtime

DONE = b"data: [DONE]\n\n"


def oai_error(status: int, message: str, kind: str = "invalid_request_error",
              headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


def _models(rt: Runtime, endpoints: list[EndpointRecord]) -> Response:
    data = [{"id": ep.model_name, "object": "model", "created": int(rt.started_at), "owned_by": f"gpuform:{ep.name}"}
            for ep in endpoints if ep.model_name]
    return JSONResponse({"object": "list", "data": data})


async def endpoint_models(request: Request) -> Response:
    rt, ep, denied = endpoint_for(request)
    if denied or ep is None:
        return _as_oai(denied)
    return _models(rt, [ep])


async def all_models(request: Request) -> Response:
    rt = runtime_of(request)
    key_name = rt.keys.client_name(presented_key(request))
    if key_name is None:
        return oai_error(401, "missing or invalid API key", "authentication_error")
    return _models(rt, [ep for ep in rt.endpoints.values() if ep.allows(key_name) and not ep.deleting])


async def endpoint_call(request: Request) -> Response:
    rt, ep, denied = endpoint_for(request)
    if denied or ep is None:
        return _as_oai(denied)
    body, bad = await read_json(request, rt.config.gateway.max_payload_runsync)
    if bad:
        return _as_oai(bad)
    return await _call(request, rt, ep, "/v1/" + request.path_params["route"], body)


async def routed_call(request: Request) -> Response:
    rt = runtime_of(request)
    key_name = rt.keys.client_name(presented_key(request))
    if key_name is None:
        return oai_error(401, "missing or invalid API key", "authentication_error")
    body, bad = await read_json(request, rt.config.gateway.max_payload_runsync)
    if bad:
        return _as_oai(bad)
    model = body.get("model") if isinstance(body, dict) else None
    ep = rt.endpoint_by_model(str(model)) if model else None
    if ep is None:
        known = sorted(e.model_name for e in rt.endpoints.values() if e.model_name)
        return oai_error(404, f"no endpoint serves model {model!r}; served models: {', '.join(known) or 'none'}",
                         "model_not_found")
    if not ep.allows(key_name):
        return oai_error(403, f"API key {key_name!r} is not allowed on endpoint {ep.name!r}", "permission_error")
    return await _call(request, rt, ep, "/v1/" + request.path_params["route"], body)


def _as_oai(resp: Response | None) -> Response:
    if resp is None:
        return oai_error(500, "internal error", "server_error")
    message = json.loads(bytes(resp.body)).get("error", "error") if isinstance(resp, JSONResponse) else "error"
    return oai_error(resp.status_code, str(message))


async def _call(request: Request, rt: Runtime, ep: EndpointRecord, route: str, body: Any) -> Response:
    if not isinstance(body, dict):
        return oai_error(400, "the request body must be a JSON object")
    try:
        job, _ = rt.queue.submit(ep.name, {"openai_route": route, "openai_input": body}, sync=True,
                                 execution_timeout=float(ep.spec.get("execution_timeout") or 600),
                                 ttl=float(ep.spec.get("ttl") or 86400), max_queue=ep.spec.get("max_queue"))
    except QueueFull as exc:
        return oai_error(429, str(exc), "rate_limit_error", {"Retry-After": str(exc.retry_after)})
    rt.metrics.submitted.labels(ep.name).inc()
    if body.get("stream"):
        return StreamingResponse(_relay(request, rt, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await _wait_done(request, rt, job)
    return _final(job)


async def _wait_done(request: Request, rt: Runtime, job: Job) -> None:
    while not await rt.queue.wait_done(job, 2.0):
        if rt.queue.closing:
            return
        if await request.is_disconnected():
            rt.queue.cancel(job.id)
            return


def _final(job: Job) -> Response:
    if job.status != COMPLETED:
        return oai_error(500 if job.status != "TIMED_OUT" else 504, f"job {job.id} {job.status}: {job.error}",
                         "worker_error")
    output = job.output
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    if isinstance(output, str):
        try:
            output = json.loads(output)
        except ValueError:
            return JSONResponse({"output": output})
    if isinstance(output, dict) and isinstance(output.get("error"), dict):
        code = output["error"].get("code")
        return JSONResponse(output, status_code=code if isinstance(code, int) and 400 <= code < 600 else 400)
    return JSONResponse(output)


async def _relay(request: Request, rt: Runtime, job: Job) -> AsyncIterator[bytes]:
    """Forward each chunk as it arrives; chunks are SSE text (``data: …``) or JSON objects."""
    sent, ended = 0, False
    started = time.monotonic()
    while True:
        event = job.chunk_event()
        event.clear()
        for chunk in job.chunks[sent:]:
            data = _sse_bytes(chunk)
            ended = ended or DONE.strip() in data
            yield data
        sent = len(job.chunks)
        if job.status in TERMINAL:
            break
        try:
            await asyncio.wait_for(event.wait(), timeout=10)
        except TimeoutError:
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            rt.queue.cancel(job.id)
            return
    if job.status != COMPLETED:
        err = {"error": {"message": f"job {job.id} {job.status}: {job.error}", "type": "worker_error"}}
        yield b"data: " + json.dumps(err).encode() + b"\n\n"
    elif not sent and job.output is not None:
        yield _sse_bytes(job.output)
    if not ended:
        yield DONE
    rt.metrics.observe(job.endpoint, "stream_total", time.monotonic() - started)


def _sse_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, str):
        text = chunk if chunk.startswith(("data:", "event:", ":")) else f"data: {chunk}"
        return (text if text.endswith("\n\n") else text.rstrip("\n") + "\n\n").encode()
    if isinstance(chunk, list):
        return b"".join(_sse_bytes(c) for c in chunk)
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


ROUTES = [
    Route("/v2/{endpoint}/openai/v1/models", endpoint_models, methods=["GET"]),
    Route("/v2/{endpoint}/openai/v1/{route:path}", endpoint_call, methods=["POST"]),
    Route("/v1/models", all_models, methods=["GET"]),
    Route("/v1/{route:path}", routed_call, methods=["POST"]),
]
