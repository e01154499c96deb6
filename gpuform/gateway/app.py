"""The gateway's ASGI application: /healthz, /metrics, admin, RunPod client, worker and OpenAI routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuform import __version__
from gpuform.gateway import admin, routes_client, routes_openai, routes_worker
from gpuform.gateway.auth import presented_key
from gpuform.gateway.errors import json_error
from gpuform.gateway.runtime import Runtime


async def healthz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return JSONResponse({"ok": True, "lineage": runtime.config.lineage, "name": runtime.config.name,
                         "version": __version__})


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    key = presented_key(request)
    if runtime.keys.client_name(key) is None and not runtime.keys.is_admin(key):
        return json_error(401, "missing or invalid API key (send Authorization: Bearer KEY)")
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def not_found(request: Request, exc: Exception) -> Response:
    return json_error(404, f"no route {request.method} {request.url.path}")


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return json_error(405, f"{request.method} is not allowed on {request.url.path}")


def build_app(runtime: Runtime) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
              *admin.ROUTES, *routes_worker.ROUTES, *routes_client.ROUTES, *routes_openai.ROUTES]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: method_not_allowed})
    app.state.runtime = runtime
    return app
