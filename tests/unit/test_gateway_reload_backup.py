"""Hot reload (POST /admin/reload), the ledger's hand-over (GET/POST /admin/ledger) and the SQLite backup and
restore routes, on the in-process gateway."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gpuform.gateway import backup
from gpuform.gateway.sqlite import SQLiteStore
from gpuform.gateway.store import LedgerEntry
from gpuform.plan.planner import _gateway_update_note
from gpuform.util.hashing import hash_secret
from tests.gateway_harness import ADMIN_KEY, CLIENT_KEY, LINEAGE, Harness, gateway, runtime_config, scenario

pytestmark = pytest.mark.unit

NEW_KEY = "new-client-key"


def _write(path: Path, **gateway_fields: object) -> None:
    path.write_text(runtime_config(**gateway_fields).to_file_text())


def test_a_reload_takes_new_keys_and_timings_and_refuses_a_field_that_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "config.json"

    async def body(h: Harness) -> None:
        h.runtime.config_path = path
        keys = {"app": hash_secret(NEW_KEY, LINEAGE)}
        _write(path, api_keys=keys, timings={"lease_timeout": 9, "reconcile_interval": 3})
        resp = await h.call("POST", "/admin/reload", ADMIN_KEY)
        assert resp.status_code == 200 and resp.json() == {"reloaded": ["api_keys", "timings"]}, resp.text
        assert (await h.call("GET", "/v2/ep/health", CLIENT_KEY)).status_code == 401, "a removed key still works"
        assert (await h.call("GET", "/v2/ep/health", NEW_KEY)).status_code == 200
        assert h.runtime.queue.timings.lease_timeout == 9 and h.runtime.reconciler.interval == 3

        _write(path, api_keys=keys, listen="127.0.0.1:9999")
        resp = await h.call("POST", "/admin/reload", ADMIN_KEY)
        assert resp.status_code == 409 and "gateway.listen" in resp.json()["error"], resp.text
        assert h.runtime.config.gateway.listen != "127.0.0.1:9999", "a refused reload took something"
        assert (await h.call("POST", "/admin/reload", CLIENT_KEY)).status_code == 401

    scenario(body)


def test_the_plan_names_a_hot_reload_or_the_fields_that_restart_the_gateway() -> None:
    assert _gateway_update_note([["api_keys", "b"], ["timings", "lease_timeout"]]) == \
        "hot reload, no restart (api_keys, timings)"
    note = _gateway_update_note([["api_keys", "b"], ["version"], ["listen"]])
    assert note.startswith("restarts the gateway") and note.endswith("for: listen, version")


def test_the_ledger_is_handed_over_once_however_often_it_is_given() -> None:
    rows = [{"worker_id": "w-old", "endpoint": "ep", "day": "2026-11-28", "gpu_type": "cpu", "gpus": 1,
             "seconds": 40.0, "cost": 0.004}]

    async def body(h: Harness) -> None:
        for expected in (1, 0):
            resp = await h.call("POST", "/admin/ledger", ADMIN_KEY, json={"entries": rows})
            assert resp.status_code == 200 and resp.json() == {"added": expected}
        listed = (await h.call("GET", "/admin/ledger", ADMIN_KEY)).json()["entries"]
        assert listed == rows
        bad = await h.call("POST", "/admin/ledger", ADMIN_KEY, json={"entries": [{"worker_id": 1}]})
        assert bad.status_code == 400 and "entries" in bad.json()["error"]

    scenario(body)


def test_a_backup_is_a_consistent_copy_and_a_restore_is_checked_then_staged(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"

    async def body(h: Harness) -> None:
        h.runtime.store.ledger.add(LedgerEntry("w1", "ep", "2026-11-29", "cpu", 1, 12.0, 0.5))
        resp = await h.call("GET", "/admin/backup", ADMIN_KEY)
        assert resp.status_code == 200
        copy = tmp_path / "copy.db"
        copy.write_bytes(resp.content)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("backup-")] == [], "temp copy left behind"
        with sqlite3.connect(copy) as conn:
            assert conn.execute("SELECT seconds FROM ledger").fetchall() == [(12.0,)]

        junk = await h.call("POST", "/admin/restore", ADMIN_KEY, content=b"junk" * 500)
        assert junk.status_code == 400 and "not a gateway backup" in junk.json()["error"]
        ok = await h.call("POST", "/admin/restore", ADMIN_KEY, content=copy.read_bytes())
        assert ok.status_code == 202 and ok.json() == {"staged": True, "restarting": False}
        assert (tmp_path / "gateway.db.restore").exists()

    async def main() -> None:
        async with gateway(store=SQLiteStore(db)) as h:
            await body(h)

    asyncio.run(main())
    assert backup.take_staged(db) and (tmp_path / "gateway.db.before-restore").exists()
    assert not backup.take_staged(db), "a staged restore is taken once"


def test_a_postgres_store_answers_the_backup_routes_with_pg_dump() -> None:
    async def body(h: Harness) -> None:
        real, h.runtime.store = h.runtime.store, object()  # type: ignore[assignment]  # not SQLite
        resp = await h.call("GET", "/admin/backup", ADMIN_KEY)
        h.runtime.store = real
        assert resp.status_code == 409 and "pg_dump" in resp.json()["error"]

    scenario(body)
