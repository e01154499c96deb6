"""The gateway's routes in one process: auth, error bodies, hostile JSON, RunPod and OpenAI behaviour."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gpuform.gateway.states import IllegalTransition, JobStatus, WorkerState
from gpuform.gateway.workers import WorkerRecord
from tests.gateway_harness import ADMIN_KEY, OTHER_KEY, Harness, endpoint_spec, scenario

pytestmark = pytest.mark.unit


async def _ready_worker(h: Harness, endpoint: str = "ep") -> Any:
    await h.run("warm-up", endpoint)
    await h.settle()
    worker = h.worker()
    await worker.serve_one()
    return worker


def test_every_route_family_refuses_a_missing_or_wrong_key_with_a_json_error() -> None:
    async def body(h: Harness) -> None:
        for method, path in [("POST", "/v2/ep/run"), ("GET", "/v2/ep/health"), ("GET", "/v1/models"),
                             ("POST", "/v1/chat/completions"), ("GET", "/metrics"), ("GET", "/admin/status"),
                             ("GET", "/v2/ep/job-take/w1"), ("POST", "/v2/ep/openai/v1/completions")]:
            resp = await h.call(method, path, key="wrong")
            assert resp.status_code == 401, (method, path, resp.text)
            error = resp.json()["error"]
            if path.startswith("/v1/") or "/openai/" in path:
                assert error["type"] == "authentication_error" and error["code"] == 401
            else:
                assert (isinstance(error, str) and "key" in error) or "token" in error
        assert (await h.call("GET", "/healthz", key=None)).json()["ok"] is True

    scenario(body)


def test_a_key_not_allowed_on_an_endpoint_gets_403_and_a_worker_token_only_fits_its_own_routes() -> None:
    async def body(h: Harness) -> None:
        await h.put(endpoint_spec(api_keys=["app"]))
        resp = await h.call("POST", "/v2/ep/run", OTHER_KEY, json={"input": 1})
        assert resp.status_code == 403 and "not allowed" in resp.json()["error"]
        worker = await _ready_worker(h)
        assert (await h.call("GET", "/v2/ep/job-take/someone-else", worker.token)).status_code == 403
        assert (await h.call("POST", "/v2/ep/run", worker.token, json={"input": 1})).status_code == 401
        assert (await h.call("GET", "/admin/status", worker.token)).status_code == 401

    scenario(body)


@pytest.mark.parametrize("raw", [b'{"input": NaN}', b'{"input": Infinity}', b'{"input": -Infinity}',
                                 b'{"input": 1e999}', b'{"input": "\\ud800"}', b'{"input": {"k\\udfff": 1}}',
                                 b'{"input": ' + b"[" * 100 + b"]" * 100 + b"}", b"[" * 5000 + b"]" * 5000,
                                 b'{"input": 1', b"\xff\xfe"])
def test_non_finite_numbers_lone_surrogates_deep_nesting_and_garbage_are_400_everywhere(raw: bytes) -> None:
    async def body(h: Harness) -> None:
        for method, path in [("POST", "/v2/ep/run"), ("POST", "/v2/ep/runsync"),
                             ("POST", "/v2/ep/openai/v1/chat/completions"), ("POST", "/v1/chat/completions")]:
            resp = await h.call(method, path, content=raw)
            assert resp.status_code == 400, (path, resp.status_code, resp.text)
        admin = await h.call("PUT", "/admin/endpoints/ep", ADMIN_KEY, content=raw)
        assert admin.status_code == 400, admin.text
        assert h.runtime.queue.stats("ep").queued == 0, "nothing was accepted"

    scenario(body)


def test_a_result_with_non_finite_numbers_or_surrogates_is_served_as_valid_json() -> None:
    async def body(h: Harness) -> None:
        worker = await _ready_worker(h)
        job_id = await h.run("x")
        job = await worker.take()
        assert job is not None
        resp = await worker.done(job_id, raw=b'{"output": {"a": NaN, "b": Infinity, "c": 1e999, "d": 1.5, '
                                              b'"e": "bad \\ud800 text"}}')
        assert resp.json() == {"accepted": True}
        status = await h.call("GET", f"/v2/ep/status/{job_id}")
        assert status.status_code == 200
        assert status.json()["output"] == {"a": None, "b": None, "c": None, "d": 1.5, "e": "bad \ufffd text"}
        stored = h.runtime.store.jobs.get(job_id)
        assert stored is not None and stored.output["a"] is None

    scenario(body)


def test_delay_time_of_a_job_that_never_started_stops_growing_once_it_ends() -> None:
    async def body(h: Harness) -> None:
        job_id = await h.run("x")
        h.clock.advance(2)
        await h.call("POST", f"/v2/ep/cancel/{job_id}")
        first = await h.status(job_id)
        h.clock.advance(30)
        second = await h.status(job_id)
        assert first["status"] == JobStatus.CANCELLED and first["delayTime"] == second["delayTime"] == 2000

    scenario(body)


@pytest.mark.parametrize(("policy", "ok"), [({"ttl": 9_999}, False), ({"ttl": 10_000}, True),
                                             ({"executionTimeout": 4_999}, False),
                                             ({"executionTimeout": 5_000}, True), ({"ttl": True}, False),
                                             ({"ttl": "60000"}, False)])
def test_policy_limits_follow_runpod(policy: dict[str, Any], ok: bool) -> None:
    async def body(h: Harness) -> None:
        resp = await h.call("POST", "/v2/ep/run", json={"input": 1, "policy": policy})
        assert resp.status_code == (200 if ok else 400), resp.text

    scenario(body)


def test_a_base_url_with_a_trailing_slash_still_reaches_the_routes() -> None:
    async def body(h: Harness) -> None:
        resp = await h.call("POST", "/v2//ep/run", json={"input": 1})
        assert resp.status_code == 200 and resp.json()["status"] == "IN_QUEUE"
        assert (await h.call("GET", "/v2/ep//health")).status_code == 200

    scenario(body)


def test_an_invalid_endpoint_spec_is_a_400_that_names_the_field() -> None:
    async def body(h: Harness) -> None:
        good = endpoint_spec().model_dump(mode="json")
        for mangle, field in [(lambda s: s["scaling"].update(max_workers="many"), "spec.scaling.max_workers"),
                              (lambda s: s.update(surprise=1), "spec.surprise"),
                              (lambda s: s["worker"].update(template="nope"), "spec.worker.template"),
                              (lambda s: s.pop("pool"), "spec.pool")]:
            spec = json.loads(json.dumps(good))
            mangle(spec)
            resp = await h.call("PUT", "/admin/endpoints/ep", ADMIN_KEY, json={"spec": spec})
            assert resp.status_code == 400 and field in resp.json()["error"], resp.text
        assert (await h.call("PUT", "/admin/endpoints/ep", ADMIN_KEY, json=[1])).status_code == 400

    scenario(body)


def test_unknown_routes_and_methods_answer_json() -> None:
    async def body(h: Harness) -> None:
        missing = await h.call("GET", "/nope")
        assert missing.status_code == 404 and missing.json() == {"error": "no route GET /nope"}
        wrong = await h.call("DELETE", "/v2/ep/run")
        assert wrong.status_code == 405 and "DELETE is not allowed" in wrong.json()["error"]
        unknown = await h.call("POST", "/v2/nope/run", json={"input": 1})
        assert unknown.status_code == 404 and "no endpoint named 'nope'" in unknown.json()["error"]
        assert (await h.call("GET", "/v2/ep/status/nope")).status_code == 404
        assert (await h.call("POST", "/v2/ep/runsync?wait=soon", json={"input": 1})).status_code == 400
        assert (await h.call("POST", "/v2/ep/run", json={"nope": 1})).status_code == 400
        assert (await h.call("POST", "/v2/ep/run", json={"input": 1, "webhook": "ftp://x"})).status_code == 400
        assert (await h.call("POST", "/v2/ep/run", json={"input": 1, "policy": 5})).status_code == 400

    scenario(body)


def test_runsync_stream_cancel_retry_purge_and_idempotency() -> None:
    async def body(h: Harness) -> None:
        worker = await _ready_worker(h)

        async def serve() -> None:
            job = None
            while job is None:
                job = await worker.take()
            await worker.chunk(job["id"], "a")
            await worker.chunk(job["id"], "b")
            await worker.done(job["id"], "ab")

        serving = asyncio.create_task(serve())
        sync = await h.call("POST", "/v2/ep/runsync", json={"input": "s"}, headers={"X-Gpuform-Timings": "1"})
        await serving
        assert sync.json()["status"] == "COMPLETED" and sync.json()["output"] == "ab"
        assert "timestamps" in sync.json()
        streamed = await h.call("GET", f"/v2/ep/stream/{sync.json()['id']}")
        assert streamed.json()["stream"] == [{"output": "a"}, {"output": "b"}]
        sse = await h.call("GET", f"/v2/ep/stream/{sync.json()['id']}", headers={"Accept": "text/event-stream"})
        assert sse.text.startswith('data: {"output": "a"}') and "event: status" in sse.text

        first = await h.call("POST", "/v2/ep/run", json={"input": 1}, headers={"Idempotency-Key": "k1"})
        again = await h.call("POST", "/v2/ep/run", json={"input": 2}, headers={"Idempotency-Key": "k1"})
        assert first.json()["id"] == again.json()["id"]
        job = await worker.take()
        assert job is not None
        await worker.done(job["id"], error="boom")
        assert (await h.status(job["id"]))["status"] == JobStatus.FAILED
        assert (await h.call("POST", f"/v2/ep/retry/{job['id']}")).json()["status"] == "IN_QUEUE"
        not_failed = await h.run(3)
        resp = await h.call("POST", f"/v2/ep/retry/{not_failed}")
        assert resp.status_code == 400 and "only FAILED or TIMED_OUT" in resp.json()["error"]
        assert (await h.call("POST", "/v2/ep/purge-queue")).json() == {"removed": 2, "status": "completed"}

    scenario(body)


def test_openai_routes_list_models_route_by_model_and_relay_streams() -> None:
    spec = endpoint_spec(model={"name": "tiny"})

    async def body(h: Harness) -> None:
        models = (await h.call("GET", "/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["tiny"]
        assert (await h.call("GET", "/v2/ep/openai/v1/models")).json()["data"][0]["id"] == "tiny"
        unknown = await h.call("POST", "/v1/chat/completions", json={"model": "big"})
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "model_not_found"
        worker = await _ready_worker(h)

        async def serve(output: Any, chunks: list[Any]) -> None:
            job = None
            while job is None:
                job = await worker.take()
            assert job["input"]["openai_route"] == "/v1/chat/completions"
            for chunk in chunks:
                await worker.chunk(job["id"], chunk)
            await worker.done(job["id"], output)

        serving = asyncio.create_task(serve({"choices": [{"text": "hi"}]}, []))
        answer = await h.call("POST", "/v1/chat/completions", json={"model": "tiny", "messages": []})
        await serving
        assert answer.json() == {"choices": [{"text": "hi"}]}

        serving = asyncio.create_task(serve(None, ['data: {"delta": "x"}\n\n', {"delta": "y"}]))
        stream = await h.call("POST", "/v2/ep/openai/v1/chat/completions", json={"stream": True})
        await serving
        assert stream.text == 'data: {"delta": "x"}\n\ndata: {"delta": "y"}\n\ndata: [DONE]\n\n'

        serving = asyncio.create_task(serve({"error": {"message": "bad", "code": 422}}, []))
        failed = await h.call("POST", "/v1/chat/completions", json={"model": "tiny"})
        await serving
        assert failed.status_code == 422

    scenario(body, endpoints={"ep": spec})


def test_metrics_and_admin_views() -> None:
    async def body(h: Harness) -> None:
        worker = await _ready_worker(h)
        metrics = (await h.call("GET", "/metrics")).text
        assert 'gpuform_jobs_total{endpoint="ep",status="COMPLETED"} 1.0' in metrics
        status = (await h.call("GET", "/admin/status", ADMIN_KEY)).json()
        assert status["endpoints"]["ep"]["ready_workers"] == 1
        info = (await h.call("GET", "/admin/info", ADMIN_KEY)).json()
        assert info["lineage"] == h.runtime.config.lineage and "depends_on" not in info["attributes"]
        listed = (await h.call("GET", "/admin/endpoints", ADMIN_KEY)).json()["endpoints"]
        single = (await h.call("GET", "/admin/endpoints/ep", ADMIN_KEY)).json()
        assert listed == {"ep": {"spec": single["spec"], "revision": single["revision"]}}, "refresh lists them at once"
        assert (await h.call("GET", "/admin/endpoints", worker.token)).status_code == 401
        workers = (await h.call("GET", "/admin/workers", ADMIN_KEY, params={"endpoint": "ep"})).json()
        assert [w["id"] for w in workers["workers"]] == [worker.id]
        h.world.logs[worker.id] = "line 1\nline 2\n"
        logs = (await h.call("GET", f"/admin/workers/{worker.id}/logs", ADMIN_KEY, params={"tail": "1"})).json()
        assert logs["log"] == "line 2"
        assert (await h.call("GET", "/admin/workers/nope/logs", ADMIN_KEY)).status_code == 404
        usage = (await h.call("GET", "/admin/usage", ADMIN_KEY)).json()
        assert usage["usage"] == []  # nothing accrued before a tick
        got = (await h.call("GET", "/admin/endpoints/ep", ADMIN_KEY)).json()
        assert got["spec"]["pool"] == "gpu" and got["status"]["status"] == "OK"
        assert (await h.call("GET", "/admin/endpoints/nope", ADMIN_KEY)).status_code == 404

    scenario(body)


def test_worker_events_and_fitness_reports_reach_the_record() -> None:
    async def body(h: Harness) -> None:
        await h.run(1)
        await h.settle()
        worker = h.worker()
        await worker.event("runtime_ready", at=h.clock() + 0.5)
        bad = await h.call("GET", f"/v2/ep/ping/{worker.id}", worker.token,
                           params={"status": "unhealthy", "check": "gpu", "reason": "no CUDA"})
        assert bad.json() == {"ok": True}
        record = h.runtime.fleet.records[worker.id]
        assert record.timeline["runtime_ready"] == h.clock() + 0.5 and "no CUDA" in record.log_tail
        assert (await h.call("POST", f"/v2/ep/job-done/{worker.id}/x", worker.token, content=b"{bad")).status_code \
            == 400

    scenario(body)


def test_a_worker_state_change_the_state_machine_forbids_raises() -> None:
    worker = WorkerRecord(id="w", endpoint="ep", pool="p", revision="r", token_hash="h", requested_at=0.0)
    worker.move(WorkerState.IDLE, 1.0)
    assert worker.idle_since == 1.0
    worker.move(WorkerState.STOPPING, 2.0, "idle timeout")
    with pytest.raises(IllegalTransition, match="stopping -> running"):
        worker.move(WorkerState.RUNNING, 3.0)
    worker.move(WorkerState.STOPPED, 4.0)
    assert worker.stopped_at == 4.0 and worker.exit_reason == "idle timeout"
    with pytest.raises(IllegalTransition):
        worker.move(WorkerState.IDLE, 5.0)


def test_a_draining_replica_answers_healthz_503_sends_takes_elsewhere_and_still_serves_clients() -> None:
    async def body(h: Harness) -> None:
        worker = await _ready_worker(h)
        h.runtime.config = h.runtime.config.model_copy(update={"replica_urls": ["http://r0:8080", "http://r1:8080"]})
        assert h.runtime.shutdown_delay() == 3.0  # replicas: a load balancer needs ~2 checks to take one out
        h.runtime.begin_draining()
        health = await h.call("GET", "/healthz", key=None)
        assert health.status_code == 503 and health.json()["draining"] is True and health.json()["ok"] is False
        take = await h.call("GET", f"/v2/ep/job-take/{worker.id}", worker.token)
        assert take.status_code == 503 and take.headers["retry-after"] == "1", take.text
        assert (await h.call("POST", "/v2/ep/run", json={"input": 1})).status_code == 200  # until the port closes

    scenario(body)


def test_one_gateway_stops_without_a_drain_and_the_delay_can_be_set() -> None:
    async def body(h: Harness) -> None:
        assert h.runtime.shutdown_delay() == 0.0
        timings = h.runtime.config.timings.model_copy(update={"shutdown_delay": 7.5})
        gateway = h.runtime.config.gateway.model_copy(update={"timings": timings})
        h.runtime.config = h.runtime.config.model_copy(update={"gateway": gateway})
        assert h.runtime.shutdown_delay() == 7.5
        assert (await h.call("GET", "/healthz", key=None)).status_code == 200

    scenario(body)
