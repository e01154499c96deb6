"""The gateway's ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuform import __version__
from gpuform.gateway import admin
from gpuform.gateway.runtime import Runtime


async def healthz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    return JSONResponse({"ok": True, "lineage": runtime.config.lineage, "name": runtime.config.name,
                         "version": __version__})


def build_app(runtime: Runtime) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    routes = [Route("/healthz", healthz, methods=["GET"]), *admin.ROUTES]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime
    return app
