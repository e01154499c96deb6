"""Admin API (admin key required): what apply, status, logs and usage talk to."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuform import __version__
from gpuform.gateway.auth import presented_key
from gpuform.gateway.errors import json_error

if TYPE_CHECKING:
    from gpuform.gateway.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _require_admin(request: Request) -> Response | None:
    if not _runtime(request).keys.is_admin(presented_key(request)):
        return json_error(401, "a valid admin key is required (Authorization: Bearer KEY)")
    return None


async def info(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    rt = _runtime(request)
    return JSONResponse({"name": rt.config.name, "lineage": rt.config.lineage, "version": __version__,
                         "attributes": rt.config.attributes, "started_at": rt.started_at})


async def put_endpoint(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    name = request.path_params["name"]
    try:
        body: Any = await request.json()
        spec, secret_env = dict(body["spec"]), {str(k): str(v) for k, v in (body.get("secret_env") or {}).items()}
    except (ValueError, KeyError, TypeError):
        return json_error(400, 'body must be {"spec": {...}, "secret_env": {...}}')
    revision = revision_of(spec, secret_env)
    await _runtime(request).put_endpoint(name, spec, secret_env, revision)
    return JSONResponse({"name": name, "revision": revision})


async def get_endpoint(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    name = request.path_params["name"]
    rt = _runtime(request)
    ep = rt.endpoints.get(name)
    if ep is None:
        return json_error(404, f"no endpoint named {name}")
    return JSONResponse({"name": name, "spec": ep.spec, "revision": ep.revision, "status": rt.endpoint_status(name)})


async def delete_endpoint(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    name = request.path_params["name"]
    rt = _runtime(request)
    if name not in rt.endpoints:
        return json_error(404, f"no endpoint named {name}")
    drain = float(request.query_params.get("drain_timeout", rt.config.timings.drain_timeout))
    await rt.delete_endpoint(name, drain)
    return JSONResponse({"name": name, "deleted": True})


async def status(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    return JSONResponse(_runtime(request).status())


async def endpoint_status(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    rt = _runtime(request)
    name = request.path_params["name"]
    if name not in rt.endpoints:
        return json_error(404, f"no endpoint named {name}")
    return JSONResponse(rt.endpoint_status(name))


async def worker_logs(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    rt = _runtime(request)
    worker = rt.fleet.records.get(request.path_params["worker_id"])
    if worker is None:
        return json_error(404, f"no worker {request.path_params['worker_id']} is known to this gateway")
    tail = int(request.query_params.get("tail", "100"))
    text = worker.log_tail
    if worker.info is not None:
        import asyncio

        text = await asyncio.to_thread(rt.fleet.provider(worker.pool).worker_logs, worker.info, tail)
    return JSONResponse({"worker": worker.id, "state": worker.state, "log": text})


async def workers(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    rt = _runtime(request)
    endpoint = request.query_params.get("endpoint")
    live = [w.to_json() for w in rt.fleet.records.values() if endpoint in (None, w.endpoint)]
    return JSONResponse({"workers": live, "history": rt.fleet.table.recent(endpoint)})


async def usage(request: Request) -> Response:
    if denied := _require_admin(request):
        return denied
    return JSONResponse({"usage": _runtime(request).ledger.usage()})


def revision_of(spec: dict[str, Any], secret_env: dict[str, str]) -> str:
    blob = json.dumps({"spec": spec, "secret_env": sorted(secret_env.items())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


ROUTES = [
    Route("/admin/info", info, methods=["GET"]),
    Route("/admin/status", status, methods=["GET"]),
    Route("/admin/endpoints/{name}/status", endpoint_status, methods=["GET"]),
    Route("/admin/endpoints/{name}", put_endpoint, methods=["PUT"]),
    Route("/admin/endpoints/{name}", get_endpoint, methods=["GET"]),
    Route("/admin/endpoints/{name}", delete_endpoint, methods=["DELETE"]),
    Route("/admin/workers", workers, methods=["GET"]),
    Route("/admin/workers/{worker_id}/logs", worker_logs, methods=["GET"]),
    Route("/admin/usage", usage, methods=["GET"]),
]
