"""The gateway's ASGI application: /healthz, /metrics, admin, RunPod client, worker and OpenAI routes, and the
web console (/console).

Errors: routes raise :class:`~gpuform.gateway.http.HTTPError`; one handler renders every error body.
Paths are normalised first, so a client whose base URL ends in a slash (``/v2//ep/run``) is served.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gpuform import __version__
from gpuform.errors import StoreError
from gpuform.gateway import admin, console, routes_backup, routes_client, routes_history, routes_openai, routes_worker
from gpuform.gateway.console.logtail import LogTail
from gpuform.gateway.http import (
    HTTPError,
    handle_http_error,
    handle_starlette_error,
    handle_store_error,
    require_client,
    runtime_of,
)
from gpuform.gateway.openapi import document
from gpuform.gateway.runtime import Runtime
from gpuform.util.hashing import deployment_id

_SLASHES = re.compile(r"/{2,}")
_ENDPOINT_LABEL = re.compile(r'endpoint="([^"]*)"')
_HOST_SERIES = ("gpuform_host_", "gpuform_gpu_", "# HELP gpuform_host_", "# TYPE gpuform_host_", "# HELP gpuform_gpu_",
                "# TYPE gpuform_gpu_")


async def healthz(request: Request) -> Response:
    """200 while serving; 503 while a stopping replica drains (its load balancer takes it out)."""
    rt = runtime_of(request)
    body = {"ok": not rt.draining, "deployment": deployment_id(rt.config.lineage), "name": rt.config.name,
            "version": __version__}
    if rt.draining:
        return JSONResponse({**body, "draining": True}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    """Prometheus metrics: everything for the admin key and metrics keys (``scope: metrics``); a client key
    sees its endpoints' series and the gateway's own, never other endpoints' or the hosts'."""
    caller = require_client(request, scope="metrics")
    rt = runtime_of(request)
    text = generate_latest(rt.metrics.registry).decode()
    if not caller.admin and caller.options is not None and caller.options.scope != "metrics":
        allowed = {name for name, ep in rt.endpoints.items() if caller.may_use(ep)}
        text = "".join(line for line in text.splitlines(keepends=True) if _visible(line, allowed))
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    """The gateway's API as OpenAPI 3.1 (any valid key)."""
    require_client(request, scope="metrics")
    return JSONResponse(document(request.app.routes))


def _visible(line: str, endpoints: set[str]) -> bool:
    match = _ENDPOINT_LABEL.search(line)
    if match is not None:
        return match.group(1) in endpoints
    return not line.startswith(_HOST_SERIES)


class NormalisePath:
    """Collapse repeated slashes in the path before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            path = _SLASHES.sub("/", scope["path"])
            scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def build_app(runtime: Runtime, reconcile: bool = True) -> Starlette:
    """The ASGI app over ``runtime``; ``reconcile=False`` leaves the reconcile loop to the caller (tests)."""

    tail = LogTail()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tail.attach()
        await runtime.start(reconcile)
        try:
            yield
        finally:
            await runtime.stop()
            tail.detach()

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
              Route("/openapi.json", openapi, methods=["GET"]),
              *admin.ROUTES, *routes_backup.ROUTES, *routes_history.ROUTES, *routes_worker.ROUTES,
              *routes_client.ROUTES, *routes_openai.ROUTES, *console.ROUTES]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPError: handle_http_error, HTTPException: handle_starlette_error,
                                        StoreError: handle_store_error})
    app.add_middleware(NormalisePath)
    app.state.runtime = runtime
    app.state.log_tail = tail
    return app
