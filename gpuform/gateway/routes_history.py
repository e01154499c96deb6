"""The request history over HTTP: ``GET /admin/endpoints/{name}/requests`` (admin key: every key's requests; ``GET
/admin/requests``: every endpoint's) and ``GET /v2/{endpoint}/requests`` (a client key: its own requests on an
endpoint it may use; a shared key, every key's, as it may see every job). Query: ``status`` (one or more finished
statuses, comma-separated), ``since`` (a duration back from now such as ``1h``, an ISO 8601 time or epoch seconds),
``limit`` (capped at :data:`~gpuform.gateway.history.MAX_LIMIT`) and ``before`` (arrivals strictly before a time:
the next page starts at the last arrival of this one). Newest arrival first; never a request's input or output (its
``id`` fetches a live result from ``/status`` while that is kept)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuform.gateway.history import BadQuery, entry_json, parse_limit, parse_since, parse_statuses
from gpuform.gateway.http import HTTPError, require_admin, require_endpoint, runtime_of
from gpuform.gateway.runtime import Runtime
from gpuform.gateway.store import HistoryQuery


def _query(rt: Runtime, request: Request, endpoint: str | None, owner: str | None) -> HistoryQuery:
    """The query in the URL; a 400 naming the parameter when a value cannot be read."""
    params = request.query_params
    try:
        now = rt.clock()
        return HistoryQuery(endpoint, owner, parse_statuses(params.get("status")),
                            parse_since(params.get("since"), now), parse_limit(params.get("limit")),
                            parse_since(params.get("before"), now, "before"))
    except BadQuery as exc:
        raise HTTPError(400, f"?{exc.param}: {exc}") from None


def _answer(rt: Runtime, query: HistoryQuery) -> Response:
    rows = rt.history.query(query)
    return JSONResponse({"endpoint": query.endpoint, "limit": query.limit, "retention": rt.history.retention,
                         "requests": [entry_json(e) for e in rows]})


async def admin_requests(request: Request) -> Response:
    """Every key's requests; an endpoint that is gone still answers while its history is kept."""
    rt = require_admin(request)
    name: str = request.path_params["name"]
    query = _query(rt, request, name, None)
    if name not in rt.endpoints and not rt.history.query(HistoryQuery(name, limit=1)):
        raise HTTPError(404, f"no endpoint named {name} and no request history for one")
    return _answer(rt, query)


async def admin_all_requests(request: Request) -> Response:
    """Every endpoint's requests in one listing (a plan reads a gateway's whole history in one call)."""
    rt = require_admin(request)
    return _answer(rt, _query(rt, request, None, None))


async def client_requests(request: Request) -> Response:
    caller, ep = require_endpoint(request)
    rt = runtime_of(request)
    return _answer(rt, _query(rt, request, ep.name, None if caller.shared else caller.owner))


ROUTES = [
    Route("/admin/requests", admin_all_requests, methods=["GET"]),
    Route("/admin/endpoints/{name}/requests", admin_requests, methods=["GET"]),
    Route("/v2/{endpoint}/requests", client_requests, methods=["GET"]),
]
