"""Admin API (admin key required): what apply, status, logs and usage talk to.

``PUT /admin/endpoints/{name}`` takes an :class:`~gpuform.spec.EndpointPut`, validated here once: a bad
spec is a 400 that names the field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuform import __version__
from gpuform.errors import GatewayError
from gpuform.gateway.http import HTTPError, read_json, require_admin
from gpuform.gateway.store import LedgerEntry
from gpuform.spec import EndpointPut, EndpointSpec, RuntimeConfig
from gpuform.util.build import build_id

MAX_ADMIN_BODY = 1_000_000


class LedgerRow(BaseModel):
    """One ledger row as the admin API carries it (:class:`~gpuform.gateway.store.LedgerEntry`)."""

    model_config = ConfigDict(extra="forbid")
    worker_id: str
    endpoint: str
    day: str
    gpu_type: str
    gpus: int
    seconds: float
    cost: float | None


async def info(request: Request) -> Response:
    rt = require_admin(request)
    attributes = rt.config.gateway.model_dump(mode="json", exclude={"depends_on"})
    attributes["version"] = build_id()  # the build that runs, whatever the configuration recorded
    return JSONResponse({"name": rt.config.name, "lineage": rt.config.lineage, "version": __version__,
                         "attributes": attributes, "started_at": rt.started_at,
                         "store_schema": rt.store.schema_version()})


async def put_endpoint(request: Request) -> Response:
    rt = require_admin(request)
    name = request.path_params["name"]
    body = await read_json(request, MAX_ADMIN_BODY)
    try:
        put = EndpointPut.model_validate(body)
    except ValidationError as exc:
        raise HTTPError(400, "invalid endpoint: " + _first_error(exc)) from None
    revision = revision_of(put.spec, put.secret_env)
    rt.put_endpoint(name, put.spec, put.secret_env, revision)
    return JSONResponse({"name": name, "revision": revision})


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _endpoint_name(request: Request) -> str:
    name: str = request.path_params["name"]
    return name


async def get_endpoint(request: Request) -> Response:
    rt = require_admin(request)
    name = _endpoint_name(request)
    rt.sync_endpoints()
    ep = rt.endpoints.get(name)
    if ep is None:
        raise HTTPError(404, f"no endpoint named {name}")
    return JSONResponse({"name": name, "spec": ep.spec.model_dump(mode="json"), "revision": ep.revision,
                         "status": rt.endpoint_status(name)})


async def list_endpoints(request: Request) -> Response:
    """Every endpoint's spec and revision in one answer (what `gpuform plan` refreshes: one call per gateway)."""
    rt = require_admin(request)
    rt.sync_endpoints()
    return JSONResponse({"endpoints": {name: {"spec": ep.spec.model_dump(mode="json"), "revision": ep.revision}
                                       for name, ep in sorted(rt.endpoints.items())}})


async def delete_endpoint(request: Request) -> Response:
    rt = require_admin(request)
    name = _endpoint_name(request)
    rt.sync_endpoints()
    if name not in rt.endpoints:
        raise HTTPError(404, f"no endpoint named {name}")
    try:
        drain = float(request.query_params.get("drain_timeout", rt.config.timings.drain_timeout))
    except ValueError:
        raise HTTPError(400, "?drain_timeout must be a number of seconds") from None
    await rt.delete_endpoint(name, drain)
    return JSONResponse({"name": name, "deleted": True})


async def status(request: Request) -> Response:
    rt = require_admin(request)
    rt.sync_endpoints()
    return JSONResponse(rt.status())


async def endpoint_status(request: Request) -> Response:
    rt = require_admin(request)
    name = _endpoint_name(request)
    rt.sync_endpoints()
    if name not in rt.endpoints:
        raise HTTPError(404, f"no endpoint named {name}")
    return JSONResponse(rt.endpoint_status(name))


async def worker_logs(request: Request) -> Response:
    rt = require_admin(request)
    worker = rt.fleet.records.get(request.path_params["worker_id"])
    if worker is None:
        raise HTTPError(404, f"no worker {request.path_params['worker_id']} is known to this gateway")
    try:
        tail = int(request.query_params.get("tail", "100"))
    except ValueError:
        raise HTTPError(400, "?tail must be a number of lines") from None
    text = worker.log_tail
    if worker.info is not None:
        text = await asyncio.to_thread(rt.fleet.providers(worker.pool).worker_logs, worker.info, tail)
    return JSONResponse({"worker": worker.id, "state": worker.state, "log": text})


async def workers(request: Request) -> Response:
    rt = require_admin(request)
    endpoint = request.query_params.get("endpoint")
    live = [w.to_json() for w in rt.fleet.records.values() if endpoint in (None, w.endpoint)]
    return JSONResponse({"workers": live, "history": rt.store.workers.recent(endpoint)})


async def usage(request: Request) -> Response:
    """GPU-seconds and cost per endpoint and day (the ledger), and jobs per API key and day."""
    rt = require_admin(request)
    return JSONResponse({"usage": rt.ledger.usage(), "by_key": rt.store.jobs.usage_by_key()})


async def reload(request: Request) -> Response:
    """Re-read the configuration file the gateway was started with and take it without a restart (hot
    reload): 409 naming the fields when a change needs a restart, 400 when the file cannot be read."""
    rt = require_admin(request)
    if rt.config_path is None:
        raise HTTPError(409, "this gateway was not started from a configuration file; restart it instead")
    try:
        config = RuntimeConfig.load(rt.config_path)
    except OSError as exc:
        raise HTTPError(400, f"cannot read the configuration {rt.config_path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise HTTPError(400, f"the configuration {rt.config_path} is not valid: {_first_error(exc)}") from None
    try:
        changed = rt.reload(config)
    except GatewayError as exc:
        raise HTTPError(409, f"{exc.message}. {exc.hint}") from None
    return JSONResponse({"reloaded": changed})


async def ledger(request: Request) -> Response:
    """Every ledger row: what `gpuform` keeps for the gateway's successor when it is destroyed or replaced."""
    rt = require_admin(request)
    return JSONResponse({"entries": [dataclasses.asdict(e) for e in rt.store.ledger.entries()]})


async def restore_ledger(request: Request) -> Response:
    """Take a predecessor's ledger rows: the rows of workers and days this gateway lacks are added."""
    rt = require_admin(request)
    body = await read_json(request, MAX_ADMIN_BODY)
    try:
        entries = [LedgerEntry(**LedgerRow.model_validate(row).model_dump()) for row in body["entries"]]
    except (ValidationError, KeyError, TypeError) as exc:
        raise HTTPError(400, f"POST /admin/ledger takes {{\"entries\": [ledger rows]}}: {exc}") from None
    return JSONResponse({"added": rt.store.ledger.restore(entries)})


def revision_of(spec: EndpointSpec, secret_env: dict[str, str]) -> str:
    dumped = spec.model_dump(mode="json")
    if dumped.get("environment") is None:
        dumped.pop("environment", None)  # revisions of endpoints without one stay what they were
    blob = json.dumps({"spec": dumped, "secret_env": sorted(secret_env.items())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


ROUTES = [
    Route("/admin/info", info, methods=["GET"]),
    Route("/admin/status", status, methods=["GET"]),
    Route("/admin/endpoints", list_endpoints, methods=["GET"]),
    Route("/admin/endpoints/{name}/status", endpoint_status, methods=["GET"]),
    Route("/admin/endpoints/{name}", put_endpoint, methods=["PUT"]),
    Route("/admin/endpoints/{name}", get_endpoint, methods=["GET"]),
    Route("/admin/endpoints/{name}", delete_endpoint, methods=["DELETE"]),
    Route("/admin/workers", workers, methods=["GET"]),
    Route("/admin/workers/{worker_id}/logs", worker_logs, methods=["GET"]),
    Route("/admin/usage", usage, methods=["GET"]),
    Route("/admin/reload", reload, methods=["POST"]),
    Route("/admin/ledger", ledger, methods=["GET"]),
    Route("/admin/ledger", restore_ledger, methods=["POST"]),
]
