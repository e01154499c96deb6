"""The web console in a real browser: Debian's chromium driven by Playwright against a real gateway (local
pool, echo workers). Logs in, sees the endpoints, sends requests from the form (runsync and streamed) and sees
them COMPLETED in the list with their output, sees the charts move after a burst, tails the logs; a client key
sees only its own endpoint; no errors in the browser's console; axe-core finds no serious or critical
accessibility violation; nothing overflows horizontally at 1280x800 or 390x844. Screenshots of every page go to
build/screenshots/ (the README's docs/img/console.png is console.png, reduced to a palette)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, local_config, run_gpuform
from tests.helpers import Deployment

pytestmark = [pytest.mark.browser, pytest.mark.integration]
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = REPO / "build" / "screenshots"
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
ENDPOINTS = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    api_keys: [test]
    scaling: {min_workers: 1, max_workers: 2, idle_timeout: 60s}
  private:
    pool: here
    worker: {template: echo}
    api_keys: [other]
    scaling: {min_workers: 0, max_workers: 1, idle_timeout: 5s}
"""
Page = Any  # playwright.sync_api.Page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or not AXE.exists():
        pytest.fail("the browser tier needs Debian's chromium and tests/browser/node_modules: run .ci/setup/all.sh")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def gateway(deployment: Deployment) -> Deployment:
    text = local_config(deployment.port, "", ENDPOINTS).replace("api_keys: {test: test-key}",
                                                                  "api_keys: {test: test-key, other: other-key}")
    deployment.apply_text(text)
    return deployment


class Watched:
    """A page with every console error and uncaught exception recorded."""

    def __init__(self, context: Any) -> None:
        self.errors: list[str] = []
        self.page: Page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400
                     else None)


def _admin_key(gw: Deployment) -> str:
    return (gw.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text().strip()


def _login(w: Watched, base: str, key: str) -> None:
    w.page.goto(base + "/console")
    assert w.page.url.endswith("/console/login"), "without a session the console sends the browser to log in"
    w.page.fill("#key", key)
    w.page.click("button[type=submit]")
    w.page.wait_for_url(base + "/console")


def _axe(page: Page, name: str) -> None:
    page.evaluate(AXE.read_text())  # evaluated by the driver: the page's CSP allows no injected script tag
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe-core on the {name} page: {json.dumps(bad, indent=1)}"


def _no_overflow(page: Page, name: str) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the {name} page is {widths[0]}px wide in a {widths[1]}px viewport"


def _check(w: Watched, name: str, viewport: dict[str, int] = DESKTOP) -> None:
    w.page.set_viewport_size(viewport)
    _no_overflow(w.page, f"{name} ({viewport['width']}x{viewport['height']})")
    _axe(w.page, name)
    SHOTS.mkdir(parents=True, exist_ok=True)
    w.page.screenshot(path=str(SHOTS / f"{name}-{viewport['width']}.png"), full_page=True)


def _requests_summary(page: Page) -> str:
    return str(page.get_attribute('[data-chart="Requests by status"]', "data-summary"))


def _submit(page: Page, mode: str, payload: str) -> None:
    page.fill("#send-input", payload)
    page.check(f"input[name=mode][value={mode}]")
    page.click("#send-form button[type=submit]")


def _send(page: Page, mode: str, payload: str) -> str:
    _submit(page, mode, payload)
    return _finished(page, mode)


def _finished(page: Page, mode: str, expect: str = "COMPLETED") -> str:
    page.wait_for_function("() => /^(COMPLETED|FAILED|TIMED_OUT|CANCELLED) /.test("
                           "document.getElementById('send-status').textContent)", timeout=30_000)
    status = page.text_content("#send-status") or ""
    assert status.startswith(expect), f"{mode}: {status} {page.text_content('#send-output')}"
    found = re.search(r"\((\S+)\)", status)
    assert found, status
    return found.group(1)


def _admin_tour(w: Watched, gw: Deployment) -> None:
    page = w.page
    _login(w, gw.url, _admin_key(gw))
    rows = page.locator("#endpoints tbody tr")
    assert rows.count() == 2 and "echo" in rows.nth(0).inner_text() and "private" in rows.nth(1).inner_text()
    assert "OK" in rows.nth(0).inner_text()
    _check(w, "overview")
    page.click("text=echo")
    page.wait_for_url(gw.url + "/console/endpoints/echo")
    page.wait_for_selector("#workers [data-worker-log]")

    before = _requests_summary(page)
    job = _send(page, "runsync", '{"hello": "from the browser"}')
    assert "from the browser" in (page.text_content("#send-output") or "")
    row = page.locator(f'#requests tr[data-id="{job}"]')
    row.wait_for(timeout=15_000)
    assert "COMPLETED" in row.inner_text()
    row.locator("button").click()
    page.wait_for_function("() => document.getElementById('job-detail').textContent.includes('Output')")
    detail = page.text_content("#job-detail") or ""
    assert "from the browser" in detail and "Input" in detail and "COMPLETED" in detail

    _submit(page, "stream", '{"stream": 3, "interval": 0.6}')
    page.wait_for_function("() => document.getElementById('send-output').textContent.includes('chunk')"
                           " && document.getElementById('send-status').textContent.includes('streaming')")
    assert '"chunk": 2' not in (page.text_content("#send-output") or ""), "chunks show as they arrive"
    assert _finished(page, "stream")
    assert '"chunk": 2' in (page.text_content("#send-output") or "")
    polled = _send(page, "run", '{"polled": true}')
    assert polled in (page.text_content("#send-status") or "")

    _burst(gw, 12)
    page.wait_for_function("(before) => document.querySelector('[data-chart=\"Requests by status\"]')"
                           ".dataset.summary !== before", arg=before, timeout=20_000)
    after = _requests_summary(page)
    completed = int(re.search(r"COMPLETED (\d+)", after).group(1))  # type: ignore[union-attr]
    assert completed >= 15, f"the chart shows the burst: {before!r} -> {after!r}"

    _submit(page, "runsync", '{"fail": "on purpose"}')
    failed = _finished(page, "runsync", expect="FAILED")
    page.select_option("#status-filter", "FAILED")
    page.wait_for_function("(id) => { const rows = document.querySelectorAll('#requests tr[data-id]');"
                           " return rows.length === 1 && rows[0].dataset.id === id; }", arg=failed, timeout=15_000)
    page.locator(f'#requests tr[data-id="{failed}"] button').click()
    page.wait_for_function("() => document.getElementById('job-detail').textContent.includes('Error')")
    assert "on purpose" in (page.text_content("#job-detail") or "")
    page.select_option("#status-filter", "")
    page.click("#workers [data-worker-log]")
    page.wait_for_function("() => { const t = document.getElementById('worker-log').textContent;"
                           " return t && t !== 'loading…'; }", timeout=15_000)
    page.wait_for_function("() => document.getElementById('gateway-log').textContent.length > 0", timeout=15_000)
    _check(w, "endpoint")
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "console.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 900})
    page.select_option("#window", "15m")
    page.wait_for_function("() => document.getElementById('charts').dataset.window === '15m'")
    _check(w, "endpoint", PHONE)
    page.set_viewport_size(DESKTOP)
    page.goto(gw.url + "/console")
    assert re.search(r"\b1[5-9]\b", page.inner_text("#endpoints tbody tr")), "requests today count the burst"
    _check(w, "overview-traffic")
    _check(w, "overview", PHONE)


def _burst(gw: Deployment, n: int) -> None:
    with gw.http() as http, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: http.post("/v2/echo/runsync", json={"input": {"n": i}}).json(), range(n)))
    assert [a["status"] for a in answers] == ["COMPLETED"] * n


def _client_tour(w: Watched, gw: Deployment) -> None:
    page = w.page
    _login(w, gw.url, "test-key")
    rows = page.locator("#endpoints tbody tr")
    assert rows.count() == 1 and "echo" in rows.inner_text() and "private" not in page.content()
    assert page.context.request.get(gw.url + "/console/endpoints/private").status == 404
    assert page.context.request.get(gw.url + "/console/api/v2/private/requests").status == 403
    assert page.context.request.get(gw.url + "/console/api/gateway/log").status == 403
    page.goto(gw.url + "/console/endpoints/echo")
    page.wait_for_selector("#requests tr[data-id]")
    assert page.locator("#gateway-log").count() == 0, "the gateway's log is for the admin key"
    _check(w, "endpoint-client")
    page.click("header button[type=submit]")  # log out
    page.wait_for_url(re.compile(r".*/console/login\?m=out$"))
    assert page.context.request.get(gw.url + "/console/api/v2/echo/requests").status == 401


def test_the_console_in_chromium(browser: Any, gateway: Deployment) -> None:
    printed = run_gpuform("-C", str(gateway.workdir), "console", check=True)
    assert printed.stdout.strip() == gateway.url + "/console" and "admin key" in printed.stderr
    unknown = run_gpuform("-C", str(gateway.workdir), "console", "nope")
    assert unknown.returncode == 1 and "main" in unknown.stderr and "Traceback" not in unknown.stderr
    admin_context = browser.new_context(viewport=DESKTOP)
    admin = Watched(admin_context)
    admin.page.goto(printed.stdout.strip() + "/login")
    _check(admin, "login")
    _admin_tour(admin, gateway)
    cookies = admin_context.cookies()
    session = next(c for c in cookies if c["name"] == "gpuform_console")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/console"
    assert _admin_key(gateway) not in json.dumps(cookies)
    client = Watched(browser.new_context(viewport=DESKTOP))
    _client_tour(client, gateway)
    assert admin.errors == [] and client.errors == [], admin.errors + client.errors
    assert (SHOTS / "console.png").stat().st_size > 10_000
