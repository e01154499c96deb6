"""The web console, served by the gateway at ``/console``: server-rendered pages, a small script and style sheet
from this package, charts drawn as SVG on the server. No CDN, no build step.

Auth: ``/console/login`` (and ``/console/static``) answer without a session; every other console path needs the
session cookie (:mod:`gpuform.gateway.session`) and, for a change, the page's CSRF token. A page without a
session redirects to the login page; an error is a page that says what to do, never a traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gpuform.errors import StoreError
from gpuform.gateway import routes_client, routes_history
from gpuform.gateway.console import api, login, pages
from gpuform.gateway.console.html import esc, page
from gpuform.gateway.http import Caller, HTTPError, console_session, runtime_of, session_caller

STATIC_DIR = Path(__file__).parent / "static"
Render = Callable[[Request, Caller, str], Response]


def _page(render: Render) -> Callable[[Request], Awaitable[Response]]:
    """A page handler: a session or a redirect to the login page; an error as a page that says what to do."""

    async def handler(request: Request) -> Response:
        rt = runtime_of(request)
        session = console_session(request)
        caller = session_caller(rt, session) if session is not None else None
        if session is None or caller is None:
            where = "/console/login?m=expired" if request.cookies.get("gpuform_console") else "/console/login"
            return RedirectResponse(where, 303)
        csrf = rt.sessions.csrf_token(session)
        try:
            return render(request, caller, csrf)
        except HTTPError as exc:
            return _error(exc.status, exc.message, caller, csrf, rt.config.name)
        except StoreError as exc:
            return _error(503, f"the gateway cannot read its store right now ({exc.message}); reload in a moment",
                          caller, csrf, rt.config.name)

    return handler


def _error(status: int, message: str, caller: Caller, csrf: str, gateway: str) -> Response:
    body = (f'<h1>{status}</h1><p class="alert" role="alert">{esc(message)}</p>'
            '<p><a href="/console">All endpoints</a></p>')
    return page(f"Error {status}", body, who=pages.who(caller), csrf=csrf, status=status, gateway=gateway)


def _charts(request: Request, caller: Caller, _csrf: str) -> Response:
    return pages.charts_fragment(request, caller)


def _workers(request: Request, caller: Caller, _csrf: str) -> Response:
    return pages.workers_fragment(request, caller)


async def _root(_request: Request) -> Response:
    return RedirectResponse("/console", 308)


_API = "/console/api/v2/{endpoint}"
ROUTES: list[BaseRoute] = [
    Route("/console", _page(pages.overview_page), methods=["GET"]),
    Route("/console/", _root, methods=["GET"]),
    Route("/console/login", login.login_page, methods=["GET"]),
    Route("/console/login", login.login, methods=["POST"]),
    Route("/console/logout", login.logout, methods=["POST"]),
    Route("/console/endpoints/{name}", _page(pages.endpoint_page), methods=["GET"]),
    Route("/console/endpoints/{name}/charts", _page(_charts), methods=["GET"]),
    Route("/console/endpoints/{name}/workers", _page(_workers), methods=["GET"]),
    Route(f"{_API}/run", routes_client.run, methods=["POST"]),
    Route(f"{_API}/runsync", routes_client.runsync, methods=["POST"]),
    Route(f"{_API}/status/{{job_id}}", routes_client.status, methods=["GET"]),
    Route(f"{_API}/stream/{{job_id}}", routes_client.stream, methods=["GET"]),
    Route(f"{_API}/cancel/{{job_id}}", routes_client.cancel, methods=["POST"]),
    Route(f"{_API}/requests", routes_history.client_requests, methods=["GET"]),
    Route(f"{_API}/jobs/{{job_id}}", api.job_detail, methods=["GET"]),
    Route("/console/api/workers/{worker_id}/log", api.worker_log, methods=["GET"]),
    Route("/console/api/gateway/log", api.gateway_log, methods=["GET"]),
    Mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static"),
]
