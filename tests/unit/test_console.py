"""The web console in one process: sessions (signed, bound to the key, expiring, valid on any replica), CSRF
and Origin checks, what each key sees, the pages, the charts' data and SVG, and bad input answered without a
500. The browser tier (tests/browser) drives the same pages in Chromium against a real gateway."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from gpuform.gateway.console import ROUTES as CONSOLE_ROUTES
from gpuform.gateway.console import charts
from gpuform.gateway.console import series as S
from gpuform.gateway.console.logtail import LogTail
from gpuform.gateway.console.model import timeline
from gpuform.gateway.session import COOKIE, Sessions, derive_secret, same_origin
from gpuform.gateway.states import JobStatus
from gpuform.gateway.store import HistoryEntry
from gpuform.util.hashing import hash_secret
from tests.gateway_harness import (
    ADMIN_KEY,
    CLIENT_KEY,
    LINEAGE,
    OTHER_KEY,
    Harness,
    endpoint_spec,
    runtime_config,
    scenario,
)

pytestmark = pytest.mark.unit
ORIGIN = {"Origin": "http://gateway.test"}
ENDPOINTS = {"ep": endpoint_spec(), "secret-ep": endpoint_spec(api_keys=["other"])}


# ---- sessions -------------------------------------------------------------------------------------------

def _sessions(secret: str = "s3cret") -> Sessions:
    return Sessions(derive_secret(LINEAGE, secret, "admin-hash"), lifetime=60)


def test_a_session_round_trips_and_any_replica_with_the_same_secret_reads_it() -> None:
    cookie, issued = _sessions().issue("app", "hash-of-app", now=1000)
    read = _sessions().read(cookie, now=1030)  # another Sessions object: another replica
    assert read == issued and read is not None and not read.admin and read.key_name == "app"
    assert read.binding == _sessions().binding("hash-of-app") != _sessions().binding("rotated")
    assert "hash-of-app" not in cookie and "app" not in cookie.split(".")[1]
    admin_cookie, _ = _sessions().issue(None, "admin-hash", now=1000)
    assert (_sessions().read(admin_cookie, now=1001) or pytest.fail("no session")).admin


@pytest.mark.parametrize("mangle", [
    lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # forged signature
    lambda c: "e30" + c[c.index("."):],  # another body under the same signature
    lambda c: c.replace(".", ""),
    lambda c: c + ".x",
    lambda c: "!!!." + c.split(".")[1],
    lambda c: "",
    lambda c: "a" * 5000 + "." + "b",
])
def test_a_tampered_or_malformed_cookie_is_no_session(mangle: Any) -> None:
    cookie, _ = _sessions().issue("app", "h", now=1000)
    assert _sessions().read(mangle(cookie), now=1001) is None


def test_sessions_expire_and_another_secret_does_not_accept_them() -> None:
    cookie, _ = _sessions().issue("app", "h", now=1000)
    assert _sessions().read(cookie, now=1061) is None
    assert _sessions("another").read(cookie, now=1001) is None
    assert derive_secret(LINEAGE, None, "x") == derive_secret(LINEAGE, None, "x") != derive_secret("other", None, "x")


def test_the_csrf_token_belongs_to_its_session() -> None:
    sessions = _sessions()
    _, one = sessions.issue("app", "h", now=0)
    _, two = sessions.issue("app", "h", now=0)
    token = sessions.csrf_token(one)
    assert sessions.csrf_ok(one, token) and not sessions.csrf_ok(two, token) and not sessions.csrf_ok(one, None)
    assert not sessions.csrf_ok(one, token[:-1] + "x")


def test_same_origin_compares_the_host_only() -> None:
    here = ["gw.lab:8080"]
    assert same_origin("http://gw.lab:8080", here) and same_origin("https://GW.lab:8080/console", here)
    assert not same_origin("http://evil.example", here) and not same_origin(None, here)
    assert not same_origin("null", here) and not same_origin("http://gw.lab:8080", [None, ""])
    assert same_origin("https://gpu.example", [None, "gpu.example"])


# ---- logging in -----------------------------------------------------------------------------------------

async def _login(h: Harness, key: str) -> httpx.Response:
    return await h.client.post("/console/login", content=f"key={key}", headers={
        **ORIGIN, "Content-Type": "application/x-www-form-urlencoded"})


def _csrf(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def test_login_sets_a_strict_httponly_cookie_and_the_overview_lists_only_the_keys_endpoints() -> None:
    async def body(h: Harness) -> None:
        assert (await h.client.get("/console")).headers["location"] == "/console/login"
        login_page = await h.client.get("/console/login")
        assert login_page.status_code == 200 and 'type="password"' in login_page.text
        assert "default-src 'self'" in login_page.headers["content-security-policy"]
        resp = await _login(h, CLIENT_KEY)
        assert resp.status_code == 303 and resp.headers["location"] == "/console"
        cookie = resp.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert CLIENT_KEY not in cookie
        page = await h.client.get("/console")
        assert page.status_code == 200 and ">ep</a>" in page.text and "secret-ep" not in page.text
        assert "key app" in page.text
        assert (await h.client.get("/console/login")).status_code == 303  # already in
        assert (await h.client.get("/console/endpoints/secret-ep")).status_code == 404
        assert (await h.client.get("/console/endpoints/nope")).status_code == 404
        assert (await h.client.get("/console/api/v2/secret-ep/requests")).status_code == 403

    scenario(body, endpoints=ENDPOINTS)


def test_only_the_login_page_and_static_assets_answer_without_a_session() -> None:
    """Every other console path sends the browser to the login page (pages) or answers 401 (the API), and
    carries no endpoint data; the static assets and the login form are the only open ones."""
    async def body(h: Harness) -> None:
        open_paths = {"/console/login", "/console/static/console.js", "/console/static/console.css"}
        for path in sorted(open_paths):
            assert (await h.client.get(path)).status_code == 200, path
        job_id = await h.run({"secret": "input"})
        closed = [("GET", "/console"), ("GET", "/console/"), ("GET", "/console/endpoints/ep"),
                  ("GET", "/console/endpoints/ep/charts"), ("GET", "/console/endpoints/ep/workers"),
                  ("POST", "/console/api/v2/ep/run"), ("POST", "/console/api/v2/ep/runsync"),
                  ("GET", f"/console/api/v2/ep/status/{job_id}"), ("GET", f"/console/api/v2/ep/stream/{job_id}"),
                  ("POST", f"/console/api/v2/ep/cancel/{job_id}"), ("GET", "/console/api/v2/ep/requests"),
                  ("GET", f"/console/api/v2/ep/jobs/{job_id}"), ("GET", "/console/api/workers/w1/log"),
                  ("GET", "/console/api/gateway/log")]
        for method, path in closed:
            resp = await h.client.request(method, path, headers=ORIGIN, json={"input": 1} if method == "POST" else None)
            assert resp.status_code in (303, 308, 401, 403), (method, path, resp.status_code, resp.text[:200])
            if resp.status_code in (303, 308):  # a page: to the login form (/console/ to /console first)
                assert resp.headers["location"] in ("/console/login", "/console"), (method, path)
            assert "secret" not in resp.text and job_id not in resp.text, (method, path)
        routes = {getattr(r, "path", "") for r in CONSOLE_ROUTES}
        tried = {p for _, p in closed} | open_paths | {"/console/logout", "/console/static"}
        untried = {r for r in routes if not any(re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", r), t) for t in tried)}
        assert untried == set(), f"console routes this test does not try without a session: {untried}"

    scenario(body, endpoints=ENDPOINTS)


def test_a_login_over_https_or_behind_a_tls_proxy_sets_a_secure_cookie() -> None:
    async def body(h: Harness) -> None:
        plain = await _login(h, ADMIN_KEY)
        assert "Secure" not in plain.headers["set-cookie"]  # plain http on a trusted network: the browser drops Secure
        h.client.cookies.clear()
        proxied = await h.client.post("/console/login", content=f"key={ADMIN_KEY}", headers={
            **ORIGIN, "Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Proto": "https"})
        assert proxied.status_code == 303 and "Secure" in proxied.headers["set-cookie"]
        h.client.cookies.clear()
        direct = await h.client.post("https://gateway.test/console/login", content=f"key={ADMIN_KEY}", headers={
            "Origin": "https://gateway.test", "Content-Type": "application/x-www-form-urlencoded"})
        assert direct.status_code == 303 and "Secure" in direct.headers["set-cookie"]

    scenario(body)


def test_bad_keys_foreign_origins_and_metrics_keys_cannot_log_in() -> None:
    config = runtime_config(api_keys={"app": hash_secret(CLIENT_KEY, LINEAGE),
                                      "scraper": {"key": hash_secret("metrics-key", LINEAGE), "scope": "metrics"}})

    async def body(h: Harness) -> None:
        assert (await _login(h, "wrong")).status_code == 401
        assert COOKIE not in h.client.cookies
        foreign = await h.client.post("/console/login", content=f"key={ADMIN_KEY}",
                                      headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and COOKIE not in h.client.cookies
        nothing = await h.client.post("/console/login", content=b"\xff\xfe", headers=ORIGIN)
        assert nothing.status_code == 401
        huge = await h.client.post("/console/login", content=b"key=" + b"a" * 20_000, headers=ORIGIN)
        assert huge.status_code == 401
        metrics = await _login(h, "metrics-key")
        assert metrics.status_code == 403 and "metrics key" in metrics.text and COOKIE not in h.client.cookies

    scenario(body, config=config)


def test_wrong_keys_from_one_address_are_throttled_and_the_window_passes() -> None:
    """Ten wrong keys within five minutes: the eleventh try is refused (429, Retry-After) even with the right
    key, until the first wrong one is out of the window; a success clears the count."""
    async def body(h: Harness) -> None:
        for _ in range(10):
            assert (await _login(h, "guess")).status_code == 401
        refused = await _login(h, CLIENT_KEY)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) == 300
        assert "Too many wrong keys" in refused.text and "set-cookie" not in refused.headers
        h.clock.advance(301)
        assert (await _login(h, CLIENT_KEY)).status_code == 303
        for _ in range(9):
            assert (await _login(h, "guess")).status_code == 401
        assert (await _login(h, ADMIN_KEY)).status_code == 303  # cleared: nine more may fail without a refusal
        for _ in range(9):
            assert (await _login(h, "guess")).status_code == 401
        assert (await _login(h, CLIENT_KEY)).status_code == 303

    scenario(body, endpoints=ENDPOINTS)


def test_the_login_throttle_forgets_the_least_recent_address_beyond_its_bound() -> None:
    from gpuform.gateway.console.throttle import LoginThrottle

    throttle = LoginThrottle(failures=2, window=60, max_tracked=3)
    for peer in ("a", "b", "c", "d"):
        throttle.failed(peer, 0)
        throttle.failed(peer, 1)
    assert throttle.retry_after("a", 2) == 0  # forgotten (bounded memory)
    assert throttle.retry_after("d", 2) == 58 and throttle.retry_after("d", 60) == 0


def test_a_rotated_key_or_a_forged_cookie_sends_the_browser_back_to_login() -> None:
    async def body(h: Harness) -> None:
        await _login(h, CLIENT_KEY)
        assert (await h.client.get("/console")).status_code == 200
        h.runtime.keys.options["app"] = h.runtime.keys.options["app"].model_copy(update={"key": "rotated"})
        gone = await h.client.get("/console")
        assert gone.status_code == 303 and gone.headers["location"] == "/console/login?m=expired"
        assert (await h.client.get("/console/login?m=expired")).text.count("session has ended") == 1
        assert (await h.client.get("/console/api/v2/ep/requests")).status_code == 401
        h.client.cookies.set(COOKIE, "forged.cookie", path="/console")
        assert (await h.client.get("/console/endpoints/ep")).status_code == 303

    scenario(body)


def test_changes_need_the_pages_csrf_token_and_this_gateways_origin() -> None:
    async def body(h: Harness) -> None:
        await _login(h, CLIENT_KEY)
        csrf = _csrf((await h.client.get("/console/endpoints/ep")).text)
        payload = {"input": {"hello": "console"}}
        no_token = await h.client.post("/console/api/v2/ep/run", json=payload, headers=ORIGIN)
        assert no_token.status_code == 403 and "CSRF" in no_token.json()["error"]
        foreign = await h.client.post("/console/api/v2/ep/run", json=payload,
                                      headers={"Origin": "http://evil.example", "X-Gpuform-Csrf": csrf})
        assert foreign.status_code == 403
        ok = await h.client.post("/console/api/v2/ep/run", json=payload, headers={**ORIGIN, "X-Gpuform-Csrf": csrf})
        assert ok.status_code == 200, ok.text
        job = h.runtime.queue.get(ok.json()["id"])
        assert job is not None and job.owner == "app"
        bad_logout = await h.client.post("/console/logout", content=b"csrf=wrong", headers=ORIGIN)
        assert bad_logout.status_code == 403
        out = await h.client.post("/console/logout", content=f"csrf={csrf}".encode(), headers=ORIGIN)
        assert out.status_code == 303 and COOKIE not in h.client.cookies

    scenario(body)


def test_the_api_routes_under_console_take_no_bearer_key_in_place_of_the_cookie_for_other_paths() -> None:
    async def body(h: Harness) -> None:
        await _login(h, ADMIN_KEY)
        # the cookie is scoped to /console: the public API still wants a key
        assert (await h.client.get("/v2/ep/health")).status_code == 401
        assert (await h.client.get("/console/api/v2/ep/requests")).status_code == 200
        csrf = _csrf((await h.client.get("/console/endpoints/ep")).text)
        payload = {"input": 1}
        for origin, extra in [("http://gateway.test", {}), ("https://gpu.example", {"X-Forwarded-Host": "gpu.example"}),
                              ("http://gateway.test", {"Origin": "", "Referer": "http://gateway.test/console"})]:
            resp = await h.client.post("/console/api/v2/ep/run", json=payload,
                                       headers={"Origin": origin, "X-Gpuform-Csrf": csrf, **extra})
            assert resp.status_code == 200, (origin, extra, resp.text)
        behind_proxy = await h.client.post("/console/api/v2/ep/run", json=payload, headers={
            "Origin": "https://gpu.example", "X-Gpuform-Csrf": csrf})
        assert behind_proxy.status_code == 403, "an origin that is neither the host nor advertised"

    scenario(body)


# ---- what each key sees ---------------------------------------------------------------------------------

async def _served(h: Harness, key: str, payload: Any) -> str:
    job_id = await h.run(payload, key=key)
    await h.settle()
    worker = h.worker()
    taken = await worker.take()
    assert taken is not None and taken["id"] == job_id
    h.clock.advance(0.5)
    await worker.done(job_id, {"echo": payload})
    return job_id


def test_a_client_sees_its_own_requests_and_their_detail_and_the_admin_sees_all() -> None:
    async def body(h: Harness) -> None:
        mine = await _served(h, CLIENT_KEY, {"n": "mine"})
        theirs = await _served(h, OTHER_KEY, {"n": "theirs"})
        await _login(h, CLIENT_KEY)
        rows = (await h.client.get("/console/api/v2/ep/requests")).json()["requests"]
        assert [r["id"] for r in rows] == [mine]
        detail = (await h.client.get(f"/console/api/v2/ep/jobs/{mine}")).json()
        assert detail["input"] == {"n": "mine"} and detail["output"] == {"echo": {"n": "mine"}}
        assert detail["status"] == "COMPLETED" and detail["worker_id"]
        assert (await h.client.get(f"/console/api/v2/ep/jobs/{theirs}")).status_code == 404
        assert (await h.client.get("/console/api/gateway/log")).status_code == 403
        assert (await h.client.get(f"/console/api/workers/{detail['worker_id']}/log")).status_code == 403
        page = (await h.client.get("/console/endpoints/ep")).text
        assert 'id="gateway-log"' not in page and "data-worker-log" not in page
        h.client.cookies.clear()
        await _login(h, ADMIN_KEY)
        rows = (await h.client.get("/console/api/v2/ep/requests")).json()["requests"]
        assert {r["id"] for r in rows} == {mine, theirs}
        page = (await h.client.get("/console/endpoints/ep")).text
        assert 'id="gateway-log"' in page and f'data-worker-log="{detail["worker_id"]}"' in page
        assert "Requests by status: total COMPLETED 2" in page
        log = await h.client.get(f"/console/api/workers/{detail['worker_id']}/log")
        assert log.status_code == 200 and log.json()["worker"] == detail["worker_id"]
        assert (await h.client.get("/console/api/workers/nope/log")).status_code == 404
        assert (await h.client.get("/console/api/gateway/log?after=x")).status_code == 400
        overview = (await h.client.get("/console")).text
        assert "secret-ep" in overview and "2</td>" in overview

    scenario(body, endpoints=ENDPOINTS)


def test_chart_windows_and_bad_query_values_never_fail_a_page() -> None:
    async def body(h: Harness) -> None:
        await _served(h, CLIENT_KEY, {"n": 1})
        await _login(h, CLIENT_KEY)
        workers = await h.client.get("/console/endpoints/ep/workers")
        assert workers.status_code == 200 and 'id="workers"' in workers.text and "idle" in workers.text
        for window in ("15m", "7d", "bogus", ""):
            frag = await h.client.get(f"/console/endpoints/ep/charts?window={window}")
            assert frag.status_code == 200 and frag.text.count("<svg") == 6
        assert (await h.client.get("/console/api/v2/ep/requests?status=nonsense")).status_code == 400
        assert (await h.client.get("/console/api/v2/ep/requests?limit=-1")).status_code == 400
        assert (await h.client.get("/console/api/v2/ep/jobs/nope")).status_code == 404
        assert (await h.client.get("/console/static/console.js")).status_code == 200
        assert (await h.client.get("/console/static/../session.py")).status_code == 404
        assert (await h.client.get("/console/")).status_code == 308

    scenario(body)


GARBAGE = ["", "%00", "../../etc/passwd", "ep'\"<script>", "x" * 3000, "%F0%9F%92%A9", "{}"]


def test_every_console_route_answers_bad_input_without_a_server_error() -> None:
    from starlette.routing import Route

    async def body(h: Harness) -> None:
        await _login(h, CLIENT_KEY)
        csrf = _csrf((await h.client.get("/console/endpoints/ep")).text)
        headers = {**ORIGIN, "X-Gpuform-Csrf": csrf}
        routes = [r for r in h.client._transport.app.routes if isinstance(r, Route)  # type: ignore[attr-defined]
                  and r.path.startswith("/console")]
        assert len(routes) >= 15
        for route in routes:
            for value in GARBAGE:
                path = re.sub(r"\{[^}]+\}", value or "ep", route.path)
                for method in (route.methods or set()) - {"HEAD"}:
                    for content in (b"", b"\xff{", b'{"input": 1e999}', b"key=" + value.encode()):
                        resp = await h.client.request(method, path + "?window=" + value + "&status=" + value
                                                      + "&after=" + value, content=content, headers=headers)
                        assert resp.status_code < 500, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
                await _login(h, CLIENT_KEY)  # the logout route ended the session
                csrf = _csrf((await h.client.get("/console/endpoints/ep")).text)
                headers = {**ORIGIN, "X-Gpuform-Csrf": csrf}

    scenario(body)


# ---- series and charts (pure) -----------------------------------------------------------------------------

def _entry(at: float, status: JobStatus = JobStatus.COMPLETED, delay: float = 1.0, run: float | None = 2.0) -> HistoryEntry:
    started = at + delay if run is not None else None
    return HistoryEntry("j", "ep", "app", status, "w", at, started, at + delay + (run or 0.0))


def test_series_bucket_requests_percentiles_workers_cold_starts_and_spend() -> None:
    frame = S.Frame.ending(now=3600.0, window=3600.0, count=4)  # buckets of 900 s from 0
    assert (frame.start, frame.step, frame.end) == (0.0, 900.0, 3600.0)
    assert frame.index(-1) is None and frame.index(0) == 0 and frame.index(3599.9) == 3 and frame.index(3600) is None
    entries = [_entry(10), _entry(20, JobStatus.FAILED, delay=3.0), _entry(1000, run=None, status=JobStatus.CANCELLED)]
    counts = S.request_counts(entries, frame)
    assert counts["COMPLETED"] == [1, 0, 0, 0] and counts["FAILED"] == [1, 0, 0, 0] and counts["CANCELLED"][1] == 1
    delay = S.timing_percentiles(entries, frame, "delay")
    assert delay["p50"][0] == 1.0 and delay["p95"][0] == 3.0 and delay["p50"][2] is None
    assert S.timing_percentiles(entries, frame, "execution")["p50"][1] is None  # it never ran
    workers = [{"requested_at": 100.0, "stopped_at": 1000.0, "price": 0.01},
               {"requested_at": 2000.0, "stopped_at": None, "price": None}]
    alive, starts, spend = S.worker_series(workers, frame, now=3600.0)
    assert alive == [1, 1, 1, 1] and starts == [1, 0, 1, 0]
    assert spend[0] == pytest.approx(8.0) and spend[1] == pytest.approx(1.0) and spend[2] == 0.0
    assert S.percentile([], 0.5) is None and S.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert S.window_of("nonsense") == S.DEFAULT_WINDOW and S.window_of("7d") == "7d"
    full = S.series(entries, workers, 3600.0, "1h")
    assert full.frame.count == S.BUCKETS and sum(full.requests["COMPLETED"]) == 1


def test_charts_are_svg_with_a_text_alternative_and_escape_names() -> None:
    frame = S.Frame.ending(now=7200.0, window=3600.0, count=3)
    svg = charts.bars("Requests <by> status", frame, {"COMPLETED": [1, 0, 2], "FAILED": [0, 1, 0]})
    assert svg.startswith("<svg") and 'role="img"' in svg and "<title>" in svg
    assert "Requests &lt;by&gt; status" in svg and "<by>" not in svg
    assert 'data-summary="total COMPLETED 3, FAILED 1"' in svg and svg.count("<rect") == 3
    line = charts.lines("Delay", frame, {"p50": [0.2, None, 1.5], "p95": [None, None, None]})
    assert "<polyline" in line and "latest p50 1.5s, p95 -" in line
    assert "$0.5" in charts.bars("Spend", frame, {"spend": [0.5, 0.0, 0.0]}, unit="$")


def test_a_cold_start_timeline_is_its_phases_in_order_from_the_request() -> None:
    worker = {"requested_at": 100.0, "ready_at": 104.0, "timeline": '{"launched": 101.5, "process_started": 102}'}
    assert timeline(worker) == [("launched", 1.5), ("process_started", 2.0), ("ready", 4.0)]
    assert timeline({"requested_at": 1.0, "timeline": "not json"}) == []


def test_the_log_tail_keeps_the_last_lines_numbered() -> None:
    import logging

    tail = LogTail(size=2)
    tail.attach()
    try:
        for n in range(3):
            logging.getLogger("gpuform.gateway").warning("line %d", n)
    finally:
        tail.detach()
    last, lines = tail.after(0)
    assert last == 3 and len(lines) == 2 and lines[-1].endswith("line 2")
    assert tail.after(3) == (3, [])


def test_a_busy_endpoint_is_read_in_bounded_rows_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuform.gateway.console import model, pages

    monkeypatch.setattr(model, "OVERVIEW_ROWS", 2)
    monkeypatch.setattr(model, "CHART_ROWS", 2)
    monkeypatch.setattr(pages, "CHART_ROWS", 2)

    async def body(h: Harness) -> None:
        for n in range(3):
            await _served(h, CLIENT_KEY, {"n": n})
        await _login(h, CLIENT_KEY)
        assert "<td>2+</td>" in (await h.client.get("/console")).text
        charts_html = (await h.client.get("/console/endpoints/ep/charts")).text
        assert "More than 2 requests in this window" in charts_html and "total COMPLETED 2" in charts_html

    scenario(body)


def test_a_session_from_one_replica_is_valid_on_another_and_not_on_another_deployment() -> None:
    from gpuform.gateway.app import build_app
    from gpuform.gateway.runtime import Runtime
    from gpuform.gateway.sqlite import SQLiteStore

    config = runtime_config().model_copy(update={"secrets_key": "shared-by-every-replica"})

    async def on(replica_config: Any, cookie: str, clock: Any) -> httpx.Response:
        replica = Runtime(replica_config, SQLiteStore(":memory:"), clock=clock)
        transport = httpx.ASGITransport(app=build_app(replica, reconcile=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as other:
            other.cookies.set(COOKIE, cookie, path="/console")
            return await other.get("/console")

    async def body(h: Harness) -> None:
        await _login(h, ADMIN_KEY)
        cookie = h.client.cookies[COOKIE]
        same = await on(config, cookie, h.clock)
        assert same.status_code == 200 and "admin" in same.text
        elsewhere = await on(config.model_copy(update={"secrets_key": "another-deployment"}), cookie, h.clock)
        assert elsewhere.status_code == 303
        h.clock.advance(13 * 3600)
        assert (await on(config, cookie, h.clock)).status_code == 303, "sessions end after 12 hours"

    scenario(body, config=config)
