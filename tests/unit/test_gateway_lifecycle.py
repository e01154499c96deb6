"""More of the runtime in one process: timeouts and stop signals, sleep mode, batches, restarts, the
reconcile loop itself, webhooks, the admin client and the gateway's start-up errors."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from gpuform.errors import GatewayError, GpuformError
from gpuform.gateway.client import AdminClient
from gpuform.gateway.runtime import Providers, Runtime
from gpuform.gateway.server import load_config
from gpuform.gateway.sqlite import SQLiteStore
from gpuform.gateway.states import JobStatus, WorkerState
from gpuform.gateway.webhooks import SIGNATURE_HEADER, sign, verify
from gpuform.util.hashing import deployment_id
from tests.gateway_harness import ADMIN_KEY, FakeClock, Harness, endpoint_spec, gateway, runtime_config, scenario

pytestmark = pytest.mark.unit


def test_execution_timeout_and_cancel_reach_the_worker_on_its_stop_channel() -> None:
    async def body(h: Harness) -> None:
        slow = await h.run("slow", policy={"executionTimeout": 5000})
        await h.settle()
        worker = h.worker()
        assert (await worker.take() or {})["id"] == slow
        await worker.ping(slow)
        await h.tick(advance=4)
        assert (await h.status(slow))["status"] == JobStatus.IN_PROGRESS
        await worker.ping(slow)
        await h.tick(advance=2)
        assert (await h.status(slow))["status"] == JobStatus.TIMED_OUT
        stops = await h.call("GET", f"/v2/ep/job-stop/{worker.id}", worker.token)
        assert stops.json()["jobsToStop"] == [slow]
        await h.tick()
        assert worker.id in h.calls("stop_worker"), "a worker that overran is replaced"
        assert (await h.call("GET", f"/v2/ep/job-stop/{worker.id}", worker.token)).status_code == 204

    scenario(body)


def test_a_cancel_of_a_running_job_is_signalled_again_on_the_next_heartbeat() -> None:
    async def body(h: Harness) -> None:
        job_id = await h.run("x")
        await h.settle()
        worker = h.worker()
        await worker.take()
        assert (await h.call("POST", f"/v2/ep/cancel/{job_id}")).json()["status"] == "CANCELLED"
        first = await h.call("GET", f"/v2/ep/job-stop/{worker.id}", worker.token)
        assert first.json()["jobsToStop"] == [job_id]
        await worker.ping(job_id)  # the worker still holds it: signalled again
        again = await h.call("GET", f"/v2/ep/job-stop/{worker.id}", worker.token)
        assert again.json()["jobsToStop"] == [job_id]
        assert (await worker.done(job_id, "late")).json() == {"accepted": False}

    scenario(body)


def test_ttl_ends_a_queued_job_with_the_endpoints_condition() -> None:
    async def body(h: Harness) -> None:
        h.world.fail_starts = 10
        job_id = await h.run("x", policy={"ttl": 10_000})
        await h.settle()
        await h.tick(advance=11)
        final = await h.status(job_id)
        assert final["status"] == JobStatus.TIMED_OUT and "ttl expired while endpoint ep is UNHEALTHY" in \
            final["error"]

    scenario(body)


def test_idle_workers_sleep_and_wake_instead_of_a_cold_start_in_sleep_mode() -> None:
    spec = endpoint_spec(worker={"template": "vllm", "sleep_mode": True, "sleep_timeout": 60},
                         model={"name": "m"}, scaling={"idle_timeout": 5})

    async def body(h: Harness) -> None:
        await h.run(1)
        await h.settle()
        worker = h.worker()
        await worker.serve_one()
        await h.tick(advance=6)
        assert h.runtime.fleet.records[worker.id].state == WorkerState.SLEEPING and h.calls("stop_worker") == []
        control = await h.call("GET", f"/v2/ep/job-stop/{worker.id}", worker.token)
        assert control.json()["control"] == "sleep"
        job_id = await h.run(2)
        await h.settle()
        assert len(h.calls("start_worker")) == 1, "woken, not cold-started"
        assert (await h.call("GET", f"/v2/ep/job-stop/{worker.id}", worker.token)).json()["control"] == "wake"
        assert await worker.take() is None, "no jobs until it says it is awake"
        await worker.event("awake")
        assert h.runtime.fleet.records[worker.id].state == WorkerState.IDLE
        assert await worker.serve_one() == job_id
        await h.tick(advance=6)
        await h.tick(advance=61)
        assert worker.id in h.calls("stop_worker"), "asleep past sleep_timeout"

    scenario(body, endpoints={"ep": spec})


def test_batch_takes_and_refresh_worker_requests() -> None:
    async def body(h: Harness) -> None:
        ids = [await h.run(i) for i in range(3)]
        await h.settle()
        worker = h.worker()
        batch = await h.call("GET", f"/v2/ep/job-take-batch/{worker.id}", worker.token, params={"batch_size": 5})
        assert sorted(j["id"] for j in batch.json()) == sorted(ids)
        resp = await worker.done(ids[0], "ok", stopPod=True)
        assert resp.json() == {"accepted": True}
        await h.settle()
        assert worker.id in h.calls("stop_worker"), "the handler asked for a fresh worker"
        assert (await h.status(ids[1]))["status"] == JobStatus.IN_QUEUE, "its other jobs are requeued"

    scenario(body)


def test_a_restarted_gateway_adopts_its_workers_and_open_jobs(tmp_path: Path) -> None:
    config = runtime_config()
    clock = FakeClock()

    async def first() -> tuple[str, str]:
        runtime = Runtime(config, SQLiteStore(tmp_path / "g.db", "store-key"), clock=clock)
        await runtime.start(reconcile=False)
        runtime.put_endpoint("ep", endpoint_spec(), {}, "r1")
        job, _ = runtime.queue.submit("ep", 1, execution_timeout=60, ttl=600)
        record = runtime.fleet.start(runtime.endpoints["ep"])
        await asyncio.gather(*runtime.fleet.tasks)
        await runtime.stop()
        return job.id, record.id

    async def second(job_id: str, worker_id: str) -> None:
        runtime = Runtime(config, SQLiteStore(tmp_path / "g.db", "store-key"), clock=clock)
        await runtime.start(reconcile=False)
        assert worker_id in runtime.fleet.records and runtime.queue.get(job_id) is not None
        assert runtime.queue.stats("ep").queued == 1
        await runtime.stop()

    asyncio.run(second(*asyncio.run(first())))


def test_the_reconcile_loop_runs_by_itself_and_stops_cleanly() -> None:
    async def main() -> None:
        config = runtime_config()
        runtime = Runtime(config, SQLiteStore(":memory:"))
        runtime.put_endpoint("ep", endpoint_spec(scaling={"min_workers": 1}), {}, "r1")
        await runtime.start()
        deadline = time.monotonic() + 5
        while not runtime.fleet.records and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert runtime.reconciler.ticks >= 1 and len(runtime.fleet.records) == 1
        runtime.begin_shutdown()
        await asyncio.sleep(0)
        await runtime.stop()
        assert runtime.queue.closing

    asyncio.run(main())


def test_webhook_signatures_verify_and_failed_deliveries_are_retried() -> None:
    body, secret = b'{"id": "j"}', "s3cret"
    header = sign(secret, body, int(time.time()))
    assert verify(secret, body, header) and not verify(secret, body + b" ", header)
    assert not verify(secret, body, "garbage") and not verify(secret, body, sign(secret, body, 1))
    attempts: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        return httpx.Response(500 if len(attempts) < 3 else 204)

    async def main() -> None:
        async with gateway() as h:
            h.runtime.webhooks.client = httpx.AsyncClient(transport=httpx.MockTransport(flaky))
            h.runtime.webhooks.deliver("https://93.184.216.34/x", {"id": "j"})
            await asyncio.gather(*h.runtime.webhooks.tasks)
            assert len(attempts) == 3 and all(SIGNATURE_HEADER in r.headers for r in attempts)

    asyncio.run(main())


def test_the_admin_client_maps_answers_to_errors_with_hints() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {ADMIN_KEY}":
            return httpx.Response(401, json={"error": "no"})
        routes: dict[str, httpx.Response] = {
            "/healthz": httpx.Response(200, json={"ok": True, "deployment": deployment_id("L")}),
            "/admin/info": httpx.Response(200, json={"name": "main"}),
            "/admin/status": httpx.Response(200, json={"endpoints": {}}),
            "/admin/endpoints/gone": httpx.Response(404, json={"error": "no endpoint"}),
            "/admin/endpoints/broken": httpx.Response(500, text="Internal Server Error"),
        }
        return routes.get(request.url.path, httpx.Response(200, json={"put": json.loads(request.content or b"{}")}))

    transport = httpx.MockTransport(handler)
    with AdminClient("http://gw.test/", ADMIN_KEY, transport=transport) as admin:
        assert admin.wait_healthy(1, "L")["ok"] and admin.info() == {"name": "main"} and admin.status()
        assert admin.get_endpoint("gone") is None
        with pytest.raises(GatewayError, match="answered 500"):
            admin.get_endpoint("broken")
        put = admin.put_endpoint("ep", endpoint_spec(), {"K": "v"})
        assert put["put"]["secret_env"] == {"K": "v"} and put["put"]["spec"]["pool"] == "gpu"
        with pytest.raises(GatewayError, match="did not become healthy"):
            admin.wait_healthy(0.2, "another lineage")
    with AdminClient("http://gw.test", "wrong", transport=transport) as admin, \
            pytest.raises(GatewayError, match="refused the admin key"):
        admin.status()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with AdminClient("http://gw.test", ADMIN_KEY, transport=httpx.MockTransport(down)) as admin:
        assert admin.healthy() is None
        with pytest.raises(GatewayError, match="cannot reach the gateway"):
            admin.status()


def test_a_missing_or_invalid_runtime_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GpuformError, match="cannot read the gateway configuration"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"name": "main"}))
    with pytest.raises(GpuformError, match="is not valid"):
        load_config(bad)
    good = tmp_path / "good.json"
    good.write_text(runtime_config().to_file_text())
    assert load_config(good).name == "main"
    assert (Runtime(load_config(good), SQLiteStore(":memory:")).config.advertise_url == "http://gateway.test")
    admin_ok = AdminClient("http://x", ADMIN_KEY)
    admin_ok.close()


def test_starts_in_flight_when_the_gateway_died_are_adopted_or_forgotten(tmp_path: Path) -> None:
    """A gateway killed while start_worker ran left records with no host: the next one settles them instead
    of counting them as starting forever (which would block min_workers)."""
    from gpuform.gateway.workers import WorkerRecord
    from gpuform.provider import WorkerInfo
    from gpuform.providers.fake.provider import FakeProvider

    config = runtime_config()

    async def main() -> None:
        store = SQLiteStore(tmp_path / "g.db", "store-key")
        for worker_id in ("ep-adopt", "ep-gone"):
            store.workers.save(WorkerRecord(id=worker_id, endpoint="ep", pool="gpu", revision="r1",
                                            token_hash=worker_id, requested_at=FakeClock().now - 5))
        store.close()
        world = FakeProvider.world_of(config.lineage, "gpu")
        world.workers["ep-adopt"] = WorkerInfo("ep-adopt", "ep", "h1", "running", "cpu")
        runtime = Runtime(config, SQLiteStore(tmp_path / "g.db", "store-key"), clock=FakeClock())
        runtime.put_endpoint("ep", endpoint_spec(scaling={"min_workers": 2}), {}, "r1")
        await runtime.start(reconcile=False)
        await runtime.fleet.sweep_orphans("ep", "gpu")
        records = runtime.fleet.records
        assert "ep-gone" not in records and records["ep-adopt"].host == "h1"
        await runtime.reconciler.tick(runtime.clock())
        await asyncio.gather(*runtime.fleet.tasks)
        assert runtime.fleet.live_count("ep") == 2, "one adopted, one started in place of the forgotten one"
        await runtime.stop()

    FakeProvider.WORLDS.pop((config.lineage, "gpu"), None)
    asyncio.run(main())


def test_what_a_provider_reports_in_the_gateway_reaches_its_log(caplog: pytest.LogCaptureFixture) -> None:
    providers = Providers(runtime_config())
    try:
        with caplog.at_level(logging.INFO, logger="gpuform.gateway"):
            providers("gpu").ctx.progress("h1: removing kept container gpuform-warm-x: 4.0% disk free")  # type: ignore[attr-defined]
    finally:
        providers.close()
    assert "pool gpu: h1: removing kept container gpuform-warm-x: 4.0% disk free" in caplog.text
