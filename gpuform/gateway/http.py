"""The HTTP seam every route uses: errors raised as :class:`HTTPError` and rendered by one handler,
the runtime of a request, the three kinds of callers (client, worker, admin) and request bodies.

Error bodies: RunPod's ``{"error": "..."}``, or OpenAI's ``{"error": {"message", "type", "code"}}`` on the
OpenAI routes (``/v1/...`` and ``/v2/{endpoint}/openai/...``), so each client library reads its own shape.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gpuform.config.schema import ApiKey
from gpuform.errors import StoreError, StoreFull
from gpuform.gateway.jsonbody import BadJSON, loads_strict
from gpuform.gateway.outage import RepeatedFailure
from gpuform.gateway.session import COOKIE, CSRF_HEADER, Session, same_origin

if TYPE_CHECKING:
    from gpuform.gateway.jobs import Job
    from gpuform.gateway.runtime import EndpointRecord, Runtime
    from gpuform.gateway.workers import WorkerRecord

log = logging.getLogger("gpuform.gateway")
store_failed = RepeatedFailure(log)  # a database outage fails every request alike: a line per 10 s, not each
STORE_RETRY_AFTER = "5"  # seconds: the store is unreachable (PostgreSQL restarting or failing over)
FULL_RETRY_AFTER = "30"  # seconds: the disk is full, which takes an operator
CONSOLE_PREFIX = "/console/"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 429: "rate_limit_error"}


class HTTPError(Exception):
    """An answer other than success: status, message (shown to the caller), headers, OpenAI error type."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.kind = status, message, headers, kind


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or "/openai/" in path


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None,
                   kind: str = "") -> JSONResponse:
    if is_openai_path(request.url.path):
        kind = kind or _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers)
    return JSONResponse({"error": message}, status, headers)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return error_response(request, exc.status, exc.message, exc.headers, exc.kind)


async def handle_store_error(request: Request, exc: Exception) -> Response:
    """The store failed (a full disk above all): nothing was acknowledged; the client may retry later."""
    assert isinstance(exc, StoreError)
    store_failed("store error on %s %s: %s", request.method, request.url.path, exc.message)
    full = isinstance(exc, StoreFull)
    return error_response(request, 507 if full else 503, f"the gateway cannot store this right now ({exc.message}); "
                                                         "nothing was accepted, retry later",
                          {"Retry-After": FULL_RETRY_AFTER if full else STORE_RETRY_AFTER})


async def handle_starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route, wrong method) in the same shape as ours."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(request, exc.status_code, message, dict(exc.headers or {}))


def runtime_of(request: Request) -> Runtime:
    """The gateway's runtime; the one way routes reach it."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def presented_key(request: Request) -> str | None:
    """``Authorization: Bearer KEY`` or the raw key (RunPod accepts both)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else header.strip()


@dataclass(frozen=True)
class Caller:
    """Who sent a client request: a client key (by name, with its options) or the admin key."""

    key_name: str | None
    admin: bool
    options: ApiKey | None = None

    @property
    def owner(self) -> str:
        """Whose jobs it submits: the key's name (the admin key's jobs belong to ``admin``)."""
        return self.key_name or "admin"

    @property
    def shared(self) -> bool:
        return self.admin or (self.options is not None and self.options.shared)

    def may_use(self, ep: EndpointRecord) -> bool:
        return self.admin or ep.allows(self.key_name)

    def may_see(self, job: Job) -> bool:
        """Whether this caller may read or act on ``job``: its own, or any when the key is shared (or admin)."""
        return self.shared or job.owner in (None, self.owner)


def require_admin(request: Request) -> Runtime:
    rt = runtime_of(request)
    if not rt.keys.is_admin(presented_key(request)):
        raise HTTPError(401, "a valid admin key is required (Authorization: Bearer KEY)")
    return rt


def require_client(request: Request, admin_allowed: bool = True, scope: str = "client") -> Caller:
    """A client key of ``scope`` within its rate limit (or, where ``admin_allowed``, the admin key); 401, 403
    or 429 otherwise."""
    rt = runtime_of(request)
    key = presented_key(request)
    if key is None and request.url.path.startswith(CONSOLE_PREFIX):
        caller = require_console(request)
        if caller.admin and not admin_allowed:
            raise HTTPError(403, "this route is for client keys; log in to the console with one")
        if caller.options is not None:
            _within_rate(rt, caller.key_name or "", caller.options)
        return caller
    name = rt.keys.client_name(key)
    if name is not None:
        options = rt.keys.options[name]
        if options.scope != scope and not (scope == "metrics" and options.scope == "client"):
            raise HTTPError(403, f"API key {name!r} is a {options.scope} key; it cannot be used here")
        _within_rate(rt, name, options)
        return Caller(name, False, options)
    if admin_allowed and rt.keys.is_admin(key):
        return Caller(None, True)
    raise HTTPError(401, "missing or invalid API key (send Authorization: Bearer KEY)")


def _within_rate(rt: Runtime, name: str, options: ApiKey) -> None:
    wait = rt.keys.wait_before(name)
    if wait:
        raise HTTPError(429, f"API key {name!r} is over its rate limit of {options.rate_limit:g} requests/s",
                        {"Retry-After": str(max(1, math.ceil(wait)))})


def console_session(request: Request) -> Session | None:
    """The console session in the request's cookie, if it is valid now."""
    rt = runtime_of(request)
    return rt.sessions.read(request.cookies.get(COOKIE), rt.clock())


def session_caller(rt: Runtime, session: Session) -> Caller | None:
    """Who a session stands for; None when its key was removed, rotated or is not a client key any more."""
    if session.admin:
        return Caller(None, True) if session.binding == rt.sessions.binding(rt.keys.admin_hash) else None
    options = rt.keys.options.get(session.key_name or "")
    if options is None or options.scope != "client" or session.binding != rt.sessions.binding(options.key):
        return None
    return Caller(session.key_name, False, options)


def from_this_gateway(request: Request) -> bool:
    """Whether the request's ``Origin`` (else ``Referer``) is this gateway: the host the browser addressed
    (``Host``, or ``X-Forwarded-Host`` from a proxy: neither can be set by a cross-site form) or the host of
    its ``advertise_url``."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    advertised = urlsplit(runtime_of(request).config.advertise_url).netloc
    return same_origin(origin, (request.headers.get("host"), request.headers.get("x-forwarded-host"), advertised))


def require_console(request: Request) -> Caller:
    """The caller of a console request (the session cookie; for a change, also the page's CSRF token and an
    ``Origin`` naming this gateway): 401 or 403 otherwise."""
    rt = runtime_of(request)
    session = console_session(request)
    caller = session_caller(rt, session) if session is not None else None
    if session is None or caller is None:
        raise HTTPError(401, "no console session, or it has expired or its key changed: log in again at "
                             "/console/login")
    if request.method in UNSAFE_METHODS:
        if not from_this_gateway(request):
            raise HTTPError(403, "this console request did not come from a page of this gateway (Origin)")
        if not rt.sessions.csrf_ok(session, request.headers.get(CSRF_HEADER)):
            raise HTTPError(403, "this console request lacks the page's CSRF token; reload the page")
    return caller


def require_endpoint(request: Request, name: str | None = None) -> tuple[Caller, EndpointRecord]:
    """The endpoint named in the path, with a caller allowed on it (401, 403 or 404 otherwise)."""
    caller = require_client(request)
    name = name if name is not None else request.path_params["endpoint"]
    ep = runtime_of(request).endpoints.get(name)
    if ep is None or ep.deleting:
        raise HTTPError(404, f"no endpoint named {name!r} on this gateway")
    if not caller.may_use(ep):
        raise HTTPError(403, f"API key {caller.key_name!r} is not allowed on endpoint {name!r}")
    return caller, ep


def require_worker(request: Request) -> WorkerRecord:
    """The worker whose token was presented, on its own routes only (401 or 403 otherwise)."""
    worker = runtime_of(request).fleet.authenticate(presented_key(request))
    if worker is None:
        raise HTTPError(401, "invalid worker token")
    if worker.id != request.path_params["worker_id"] or worker.endpoint != request.path_params["endpoint"]:
        raise HTTPError(403, "this token belongs to another worker")
    return worker


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes (chunked bodies are counted
    while they stream in; the edge protocol enforces the route's limit even earlier)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        parts.append(chunk)
    return b"".join(parts)


def too_large(size: int, limit: int) -> HTTPError:
    return HTTPError(413, f"request body of {size} bytes exceeds this route's limit of {limit} bytes; "
                          "send large inputs by reference (a URL) instead")


async def read_json(request: Request, limit: int, empty: Any = None) -> Any:
    """The body as strict JSON (400 for anything else; ``empty`` for an empty body when given)."""
    raw = await read_body(request, limit)
    if not raw.strip() and empty is not None:
        return empty
    try:
        return loads_strict(raw, runtime_of(request).config.gateway.limits.json_depth)
    except BadJSON as exc:
        raise HTTPError(400, f"the request body is not acceptable JSON: {exc}") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HTTPError(400, f"{what} must be a JSON object")
    return value
