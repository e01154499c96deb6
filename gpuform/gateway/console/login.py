"""Logging in and out of the console. ``POST /console/login`` takes a key in the form body (never in a URL),
checks it like any request's key, and answers with the session cookie: HttpOnly, SameSite=Strict, limited to
``/console``, Secure when the page came over HTTPS."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gpuform.gateway.console.html import esc, page
from gpuform.gateway.console.throttle import LoginThrottle
from gpuform.gateway.http import (
    HTTPError,
    console_session,
    from_this_gateway,
    read_body,
    runtime_of,
    session_caller,
)
from gpuform.gateway.session import COOKIE, CSRF_FIELD

MAX_FORM = 8192
MESSAGES = {"expired": "Your session has ended. Log in again.", "out": "You are logged out."}


def login_form(message: str = "", status: int = 200, gateway: str = "") -> HTMLResponse:
    note = f'<p class="alert" role="alert">{esc(message)}</p>' if message else ""
    body = (f'<div class="login"><h1>Log in</h1>{note}'
            '<form method="post" action="/console/login">'
            '<label for="key">API key</label>'
            '<input id="key" name="key" type="password" autocomplete="current-password" required>'
            '<p class="note">The admin key sees every endpoint; a client key sees its own endpoints and requests. '
            'The key is sent once: the session cookie holds only its name, signed by the gateway.</p>'
            '<button type="submit">Log in</button></form></div>')
    return page("Log in", body, status=status, gateway=gateway)


async def login_page(request: Request) -> Response:
    rt = runtime_of(request)
    session = console_session(request)
    if session is not None and session_caller(rt, session) is not None:
        return RedirectResponse("/console", 303)
    return login_form(MESSAGES.get(request.query_params.get("m", ""), ""), gateway=rt.config.name)


async def _form(request: Request) -> dict[str, str]:
    try:
        raw = await read_body(request, MAX_FORM)
    except HTTPError:
        return {}
    try:
        fields = parse_qs(raw.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items() if v}


async def login(request: Request) -> Response:
    rt = runtime_of(request)
    if not from_this_gateway(request):
        return login_form("This login did not come from this gateway's login page; open it and try again.", 403,
                          rt.config.name)
    throttle, peer, now = _throttle(request), request.client.host if request.client else "", rt.clock()
    wait = throttle.retry_after(peer, now)
    if wait:
        refused = login_form(f"Too many wrong keys from this address; try again in {wait} s.", 429, rt.config.name)
        refused.headers["Retry-After"] = str(wait)
        return refused
    key = (await _form(request)).get("key", "").strip()
    if rt.keys.is_admin(key):
        cookie, _ = rt.sessions.issue(None, rt.keys.admin_hash, rt.clock())
    else:
        name = rt.keys.client_name(key)
        options = rt.keys.options.get(name or "")
        if name is None or options is None:
            throttle.failed(peer, now)
            return login_form("That key is not valid on this gateway.", 401, rt.config.name)
        if options.scope != "client":
            return login_form(f"Key {name!r} is a {options.scope} key; log in with a client key or the admin key.",
                              403, rt.config.name)
        cookie, _ = rt.sessions.issue(name, options.key, rt.clock())
    throttle.succeeded(peer)
    response = RedirectResponse("/console", 303)
    response.set_cookie(COOKIE, cookie, max_age=int(rt.sessions.lifetime), path="/console", httponly=True,
                        samesite="strict", secure=_secure(request))
    return response


def _throttle(request: Request) -> LoginThrottle:
    """The application's failed-login counts (one per gateway process)."""
    state = request.app.state
    if not hasattr(state, "login_throttle"):
        state.login_throttle = LoginThrottle()
    throttle: LoginThrottle = state.login_throttle
    return throttle


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"


async def logout(request: Request) -> Response:
    rt = runtime_of(request)
    session = console_session(request)
    form = await _form(request)
    token = form.get(CSRF_FIELD)
    if session is not None and not (from_this_gateway(request) and rt.sessions.csrf_ok(session, token)):
        return login_form("Log out from the console's own pages.", 403, rt.config.name)
    response = RedirectResponse("/console/login?m=out", 303)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response
