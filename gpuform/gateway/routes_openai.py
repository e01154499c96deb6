"""OpenAI-compatible routes. Calls become jobs shaped ``{"openai_route": "/v1/…", "openai_input": {…}}`` (as on
RunPod); with ``stream: true`` the worker's chunks are written to the client as SSE the moment they arrive.

- ``/v2/{endpoint}/openai/v1/...``: one endpoint;
- ``/v1/...``: routed by the request's ``model`` to the endpoint serving it (its model, or one of its LoRA
  adapters);
- ``GET .../models`` answers from the declared model and adapter names without waking a worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gpuform.gateway.http import Caller, HTTPError, read_json, require_client, require_endpoint, runtime_of
from gpuform.gateway.jobs import Job
from gpuform.gateway.jsonbody import safe_text
from gpuform.gateway.routes_client import SSE_HEADERS, submit
from gpuform.gateway.states import TERMINAL, JobStatus

if TYPE_CHECKING:
    from gpuform.gateway.runtime import EndpointRecord, Runtime

DONE = b"data: [DONE]\n\n"


def _models(rt: Runtime, endpoints: list[EndpointRecord]) -> Response:
    """Each endpoint's model, then its LoRA adapters (``parent``: the model they apply to), as vLLM lists them."""
    created = int(rt.started_at)
    data: list[dict[str, Any]] = []
    for ep in endpoints:
        if ep.model_name:
            data.append({"id": ep.model_name, "object": "model", "created": created, "owned_by": f"gpuform:{ep.name}",
                         "parent": None})
        data += [{"id": name, "object": "model", "created": created, "owned_by": f"gpuform:{ep.name}",
                  "parent": ep.model_name} for name in ep.spec.adapters]
    return JSONResponse({"object": "list", "data": data})


async def endpoint_models(request: Request) -> Response:
    _, ep = require_endpoint(request)
    return _models(runtime_of(request), [ep])


async def all_models(request: Request) -> Response:
    caller = require_client(request, admin_allowed=False)
    rt = runtime_of(request)
    return _models(rt, [ep for ep in rt.endpoints.values() if caller.may_use(ep) and not ep.deleting])


async def endpoint_call(request: Request) -> Response:
    caller, ep = require_endpoint(request)
    rt = runtime_of(request)
    body = await read_json(request, rt.config.gateway.max_payload_runsync)
    return await _call(request, rt, caller, ep, "/v1/" + request.path_params["route"], body)


async def routed_call(request: Request) -> Response:
    caller = require_client(request, admin_allowed=False)
    rt = runtime_of(request)
    body = await read_json(request, rt.config.gateway.max_payload_runsync)
    model = body.get("model") if isinstance(body, dict) else None
    ep = rt.endpoint_by_model(str(model)) if model else None
    if ep is None:
        known = sorted(n for e in rt.endpoints.values() for n in e.spec.served_names)
        raise HTTPError(404, f"no endpoint serves model {model!r}; served models: {', '.join(known) or 'none'}",
                        kind="model_not_found")
    if not caller.may_use(ep):
        raise HTTPError(403, f"API key {caller.key_name!r} is not allowed on endpoint {ep.name!r}")
    return await _call(request, rt, caller, ep, "/v1/" + request.path_params["route"], body)


async def _call(request: Request, rt: Runtime, caller: Caller, ep: EndpointRecord, route: str,
                body: Any) -> Response:
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    job = submit(rt, caller, ep, {"openai_route": route, "openai_input": body}, sync=True,
                 execution_timeout=ep.spec.execution_timeout, ttl=ep.spec.ttl)
    if body.get("stream"):
        return StreamingResponse(_relay(request, rt, job), media_type="text/event-stream", headers=SSE_HEADERS)
    await _wait_done(request, rt, job)
    return _final(job)


async def _wait_done(request: Request, rt: Runtime, job: Job) -> None:
    while not await rt.queue.wait_done(job, 2.0):
        if rt.queue.closing:
            return
        if await request.is_disconnected():
            rt.queue.cancel(job.id)
            return


def _openai_error(error: Any) -> Response | None:
    """A handler's failure in OpenAI's shape (``{"message", "type", "code": 4xx}``, as the vLLM and embeddings
    workers return for a bad request) answers with its own status, not 500."""
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600 and isinstance(error.get("message"), str):
        return JSONResponse({"error": error}, status_code=code)
    return None


def _final(job: Job) -> Response:
    failed = _openai_error(job.error) if job.status == JobStatus.FAILED else None
    if failed is not None:
        return failed
    if job.status != JobStatus.COMPLETED:
        raise HTTPError(504 if job.status == JobStatus.TIMED_OUT else 500,
                        f"job {job.id} {job.status}: {safe_text(job.error)}", kind="worker_error")
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
    async with aclosing(rt.queue.follow(job, 10)) as changes:
        async for chunks in changes:
            if chunks is None:
                yield b": keep-alive\n\n"
            for chunk in chunks or ():
                data = _sse_bytes(chunk)
                ended = ended or DONE.strip() in data
                yield data
            sent += len(chunks or ())
            if job.status not in TERMINAL and await request.is_disconnected():
                rt.queue.cancel(job.id)
                return
    if job.status != JobStatus.COMPLETED:
        err = {"error": {"message": f"job {job.id} {job.status}: {safe_text(job.error)}", "type": "worker_error"}}
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
