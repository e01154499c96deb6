"""The request history over HTTP, in one process: what the admin and each client key see, filters, bad query
values (400 naming the parameter), and retention apart from the results'."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway_harness import (
    ADMIN_KEY,
    CLIENT_KEY,
    OTHER_KEY,
    TIMINGS,
    Harness,
    endpoint_spec,
    runtime_config,
    scenario,
)

pytestmark = pytest.mark.unit
ENDPOINTS = {"ep": endpoint_spec(), "ep2": endpoint_spec(api_keys=["other"])}


async def _traffic(h: Harness) -> dict[str, str]:
    """On ep: app's job completed (2 s queued, 3 s running) and one failed; other's cancelled in the queue."""
    await h.run("warm-up")
    await h.settle()
    worker = h.worker()
    await worker.serve_one()
    h.clock.advance(1)
    ok = await h.run("ok")
    h.clock.advance(2)
    assert (await worker.take() or {})["id"] == ok
    h.clock.advance(3)
    await worker.done(ok, {"fine": True})
    h.clock.advance(1)
    bad = await h.run("bad")
    await worker.take()
    await worker.done(bad, error="boom")
    h.clock.advance(1)
    theirs = await h.run("theirs", key=OTHER_KEY)
    await h.call("POST", f"/v2/ep/cancel/{theirs}", OTHER_KEY)
    return {"ok": ok, "bad": bad, "theirs": theirs, "worker": worker.id}


async def _rows(h: Harness, path: str, key: str = CLIENT_KEY, **params: Any) -> list[dict[str, Any]]:
    resp = await h.call("GET", path, key, params=params)
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()["requests"]
    return rows


def test_admin_sees_every_keys_requests_newest_first_with_delay_execution_and_worker() -> None:
    async def body(h: Harness) -> None:
        made = await _traffic(h)
        rows = await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY)
        assert [r["id"] for r in rows][:3] == [made["theirs"], made["bad"], made["ok"]] and len(rows) == 4
        ok = next(r for r in rows if r["id"] == made["ok"])
        assert (ok["status"], ok["delay"], ok["execution"], ok["worker_id"], ok["owner"]) == (
            "COMPLETED", 2.0, 3.0, made["worker"], "app")
        theirs = rows[0]
        assert (theirs["status"], theirs["execution"], theirs["worker_id"], theirs["owner"]) == (
            "CANCELLED", None, None, "other")
        assert all("input" not in r and "output" not in r for r in rows), "never a request's input or output"
        failed = await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY, status="failed,cancelled")
        assert [r["status"] for r in failed] == ["CANCELLED", "FAILED"]
        assert [r["id"] for r in await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY, limit=1)] == [
            made["theirs"]]
        assert len(await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY, since="2s")) == 2
        assert len(await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY, since=str(h.clock() - 2))) == 2
        assert await _rows(h, "/admin/endpoints/ep2/requests", ADMIN_KEY) == []
        page = await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY, limit=2)
        rest = await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY, before=str(page[-1]["created_at"]))
        assert [r["id"] for r in page + rest] == [r["id"] for r in rows], "pages follow on"
        everything = await _rows(h, "/admin/requests", ADMIN_KEY)  # every endpoint's, in one listing
        assert [r["id"] for r in everything] == [r["id"] for r in rows] and {r["endpoint"] for r in rows} == {"ep"}
        assert len(await _rows(h, "/admin/requests", ADMIN_KEY, status="failed")) == 1

    scenario(body, endpoints=ENDPOINTS)


def test_a_client_key_sees_only_its_own_requests_and_only_on_endpoints_it_may_use() -> None:
    async def body(h: Harness) -> None:
        made = await _traffic(h)
        mine = await _rows(h, "/v2/ep/requests")
        assert made["theirs"] not in {r["id"] for r in mine} and {r["owner"] for r in mine} == {"app"}
        assert len(mine) == 3
        assert [r["id"] for r in await _rows(h, "/v2/ep/requests", OTHER_KEY)] == [made["theirs"]]
        refused = await h.call("GET", "/v2/ep2/requests", CLIENT_KEY)
        assert refused.status_code == 403 and "not allowed" in refused.json()["error"]
        assert (await h.call("GET", "/v2/nope/requests")).status_code == 404
        assert (await h.call("GET", "/v2/ep/requests", "wrong")).status_code == 401
        assert (await h.call("GET", "/admin/endpoints/ep/requests", CLIENT_KEY)).status_code == 401
        assert (await h.call("GET", "/admin/requests", CLIENT_KEY)).status_code == 401
        assert len(await _rows(h, "/v2/ep/requests", ADMIN_KEY)) == 4, "the admin key is shared"

    scenario(body, endpoints=ENDPOINTS)


@pytest.mark.parametrize(("params", "named"), [({"status": "RUNNING"}, "?status"), ({"status": "IN_QUEUE"}, "?status"),
                                                ({"since": "yesterday"}, "?since"), ({"since": "nan"}, "?since"),
                                                ({"limit": "0"}, "?limit"), ({"limit": "ten"}, "?limit"),
                                                ({"limit": "-3"}, "?limit"), ({"before": "soon"}, "?before")])
def test_bad_query_values_are_400s_that_name_the_parameter_and_the_fix(params: dict[str, str], named: str) -> None:
    async def body(h: Harness) -> None:
        for path, key in (("/admin/endpoints/ep/requests", ADMIN_KEY), ("/v2/ep/requests", CLIENT_KEY)):
            resp = await h.call("GET", path, key, params=params)
            assert resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert error.startswith(named) and any(fix in error for fix in ("use one", "write", "whole number")), error

    scenario(body)


def test_limit_is_capped_and_an_unknown_endpoint_without_history_is_404_for_the_admin() -> None:
    async def body(h: Harness) -> None:
        resp = await h.call("GET", "/admin/endpoints/ep/requests", ADMIN_KEY, params={"limit": "5000"})
        assert resp.status_code == 200 and resp.json()["limit"] == 1000
        assert (await h.call("GET", "/admin/endpoints/nope/requests", ADMIN_KEY)).status_code == 404

    scenario(body)


def test_history_outlives_the_result_and_is_pruned_after_its_own_retention() -> None:
    config = runtime_config(timings={**TIMINGS, "request_history": 600})

    async def body(h: Harness) -> None:
        made = await _traffic(h)
        await h.tick(120)  # past the results' retention (60 s)
        assert (await h.call("GET", f"/v2/ep/status/{made['ok']}")).status_code == 404
        assert len(await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY)) == 4
        await h.tick(600)
        assert await _rows(h, "/admin/endpoints/ep/requests", ADMIN_KEY) == []

    scenario(body, config=config)
