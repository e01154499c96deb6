"""The runtime in one process (ASGI app, fake provider, fake clock): the scaling lifecycle, asserted on the
provider calls the fleet makes and on the job states clients see."""

from __future__ import annotations

import asyncio

import pytest

from gpuform.gateway.states import JobStatus, WorkerState
from tests.gateway_harness import Harness, endpoint_spec, runtime_config, scenario

pytestmark = pytest.mark.unit


def states(h: Harness) -> dict[str, WorkerState]:
    return {w.id: w.state for w in h.runtime.fleet.records.values()}


def test_a_job_on_an_idle_endpoint_starts_a_worker_at_once_and_completes() -> None:
    async def body(h: Harness) -> None:
        job_id = await h.run({"hello": "world"})
        await h.settle()
        assert len(h.calls("start_worker")) == 1, "scaled from zero without waiting for a tick"
        worker = h.worker()
        assert states(h) == {worker.id: WorkerState.INITIALIZING}
        assert (await h.status(job_id))["status"] == JobStatus.IN_QUEUE
        assert await worker.serve_one() == job_id
        final = await h.status(job_id)
        assert final["status"] == JobStatus.COMPLETED and final["output"] == {"echo": {"hello": "world"}}
        assert final["workerId"] == worker.id
        assert states(h) == {worker.id: WorkerState.IDLE}
        launch = h.world.launches[worker.id]
        assert launch.gpu_types == ["cpu"] and launch.env["RUNPOD_WEBHOOK_GET_JOB"].startswith(
            "http://gateway.test/v2/ep/job-take/")

    scenario(body)


def test_an_idle_worker_stops_after_its_idle_timeout_and_is_billed_for_its_lifetime() -> None:
    async def body(h: Harness) -> None:
        await h.run(1)
        await h.settle()
        worker = h.worker()
        started = h.clock()
        await worker.serve_one()
        await h.tick(advance=3)
        assert h.calls("stop_worker") == [], "still inside its idle timeout (5 s)"
        await h.tick(advance=3)
        assert h.calls("stop_worker") == [worker.id]
        assert states(h)[worker.id] == WorkerState.STOPPED
        assert h.runtime.ledger.worker_seconds(worker.id) == pytest.approx(h.clock() - started)
        assert h.world.running() == []

    scenario(body)


def test_a_worker_that_dies_before_ready_backs_off_exponentially_with_its_log() -> None:
    async def body(h: Harness) -> None:
        job_id = await h.run(1)
        await h.settle()
        first = h.worker()
        h.world.crash(first.id, 3, "ImportError: no module named torch\n")
        await h.tick(advance=1)
        await h.tick(advance=1)  # the fleet lists workers every other tick
        health = (await h.call("GET", "/v2/ep/health")).json()
        assert health["status"] == "UNHEALTHY" and "torch" in health["condition"]["log_tail"]
        assert states(h)[first.id] == WorkerState.UNHEALTHY
        await h.tick(advance=5)
        assert len(h.calls("start_worker")) == 1, "backing off for 10 s"
        await h.tick(advance=6)
        assert len(h.calls("start_worker")) == 2, "tried again after the back-off"
        second = h.worker()
        h.world.crash(second.id, 3, "ImportError again\n")
        await h.tick(advance=1)
        await h.tick(advance=1)
        await h.tick(advance=15)
        assert len(h.calls("start_worker")) == 2, "the second back-off doubles (20 s)"
        await h.tick(advance=6)
        assert len(h.calls("start_worker")) == 3
        assert (await h.status(job_id))["status"] == JobStatus.IN_QUEUE, "the job waits; it is not lost"

    scenario(body)


def test_the_spending_cap_blocks_scale_up_above_min_workers() -> None:
    spec = endpoint_spec(gpu={"types": ["H100-80GB"]}, spend_limit_per_day=0.5,
                         scaling={"max_workers": 2, "idle_timeout": 600})

    async def body(h: Harness) -> None:
        first_job = await h.run(1)
        await h.settle()
        first = h.worker()
        await first.take()  # busy with the first job
        await h.tick(advance=4)  # 4 s x $0.2/s = $0.80 > $0.50 today
        await h.run(2)
        await first.ping(first_job)
        await h.tick(advance=4.5)  # the second job waited longer than the queue delay: a second worker is wanted
        assert h.runtime.reconciler.decisions["ep"].blocked == "SPEND_CAP"
        assert len(h.calls("start_worker")) == 1, "capped: no second worker"
        health = (await h.call("GET", "/v2/ep/health")).json()
        assert health["status"] == "SPEND_CAP" and "spending cap reached" in health["condition"]["message"]
        assert "spending cap reached" in (await h.call("GET", "/admin/endpoints/ep/status", "admin-key")).json()[
            "scaling_notes"][0]

    scenario(body, endpoints={"ep": spec}, config=runtime_config(prices={"H100-80GB": 0.2}))


def test_a_new_revision_replaces_idle_workers_at_once_and_busy_ones_after_their_job() -> None:
    async def body(h: Harness) -> None:
        await h.put(endpoint_spec(scaling={"min_workers": 2, "max_workers": 2}))
        await h.tick()
        a, b = (h.worker(w) for w in h.world.launches)
        await a.take()
        await b.take()  # both ready (first contact)
        job = await h.run("long")
        await a.take()
        busy = a if h.runtime.fleet.records[a.id].jobs else b
        idle = b if busy is a else a
        await h.put(endpoint_spec(scaling={"min_workers": 2, "max_workers": 2}, worker={"template": "echo",
                                                                                     "env": {"V": "2"}}))
        await h.tick()
        assert idle.id in h.calls("stop_worker") and busy.id not in h.calls("stop_worker")
        await h.tick()
        assert len(h.calls("start_worker")) == 3, "a replacement for the idle one, on the next tick"
        await busy.done(job, "ok")
        await h.tick()
        assert busy.id in h.calls("stop_worker"), "busy one replaced after its job"
        newest = h.world.launches[h.calls("start_worker")[-1]]
        assert newest.env["V"] == "2"

    scenario(body)


def test_a_lapsed_lease_requeues_the_job_for_another_worker() -> None:
    async def body(h: Harness) -> None:
        job_id = await h.run("x")
        await h.settle()
        worker = h.worker()
        taken = await worker.take()
        assert taken is not None and taken["id"] == job_id
        await h.tick(advance=3)
        assert (await h.status(job_id))["status"] == JobStatus.IN_PROGRESS
        await worker.ping(job_id)  # a heartbeat renews the lease
        await h.tick(advance=4)
        assert (await h.status(job_id))["status"] == JobStatus.IN_PROGRESS
        await h.tick(advance=6)  # silent for longer than lease_timeout (5 s)
        assert (await h.status(job_id))["status"] == JobStatus.IN_QUEUE
        again = await worker.take()
        assert again is not None and again["id"] == job_id, "handed out again"
        late = await worker.done(job_id, "first try")  # the same worker, its second attempt: accepted
        assert late.json() == {"accepted": True}
        assert h.runtime.queue.get(job_id).attempts == 2  # type: ignore[union-attr]

    scenario(body)


def test_gpu_types_fall_back_in_priority_order_and_no_capacity_is_reported() -> None:
    config = runtime_config(pool_hosts=[{"name": "h1", "gpus": ["A100-80GB"]}])
    spec = endpoint_spec(gpu={"types": ["H100-80GB", "A100-80GB"]}, scaling={"max_workers": 2})

    async def body(h: Harness) -> None:
        await h.run(1)
        await h.settle()
        first = h.worker()
        assert h.runtime.fleet.records[first.id].gpu_type == "A100-80GB"
        await first.take()
        await h.run(2)
        await h.tick(advance=5)
        health = (await h.call("GET", "/v2/ep/health")).json()
        assert health["status"] == "NO_CAPACITY" and "H100-80GB or A100-80GB" in health["condition"]["message"]

    scenario(body, config=config, endpoints={"ep": spec})


def test_deleting_an_endpoint_drains_fails_queued_jobs_and_stops_workers() -> None:
    async def body(h: Harness) -> None:
        await h.run(1)
        await h.settle()
        worker = h.worker()
        await worker.serve_one()
        queued = await h.run(2)
        resp = await h.call("DELETE", "/admin/endpoints/ep", "admin-key", params={"drain_timeout": 0})
        assert resp.json() == {"name": "ep", "deleted": True}
        assert worker.id in h.calls("stop_worker")
        assert (await h.call("GET", f"/v2/ep/status/{queued}")).status_code == 404
        assert h.runtime.queue.get(queued).status == JobStatus.FAILED  # type: ignore[union-attr]

    scenario(body)


def test_webhooks_are_delivered_signed_when_a_job_ends() -> None:
    async def body(h: Harness) -> None:
        job_id = await h.run("x", webhook="https://93.184.216.34:8443/done")
        await h.settle()
        await h.worker().serve_one()
        for _ in range(20):
            if h.webhooks:
                break
            await asyncio.sleep(0.01)
        (request,) = h.webhooks
        assert str(request.url) == "https://93.184.216.34:8443/done" and job_id.encode() in request.content
        assert request.headers["X-Gpuform-Signature"].startswith("t=")

    scenario(body)


def test_a_worker_whose_host_stops_answering_is_written_off_after_a_lease_not_counted_as_a_crash() -> None:
    """The provider's listing skips a host that does not answer. Its worker is kept while heartbeats still
    come (only the host's SSH may be failing), written off with its host once they have stopped for a lease
    (its job requeued, a replacement started, no crash counted), and stopped if the host answers again."""
    async def body(h: Harness) -> None:
        job_id = await h.run(1)
        await h.settle()
        worker = h.worker()
        lost = h.world.workers[worker.id]
        assert (await worker.take() or {}).get("id") == job_id
        h.world.lost_hosts.add(lost.host)
        for _ in range(4):  # heartbeats keep coming: only the host's SSH fails
            await worker.ping(job_id)
            await h.tick(advance=4)
        assert states(h)[worker.id] == WorkerState.RUNNING
        for _ in range(4):  # silent for 16 s, past the 12 s lease
            await h.tick(advance=4)
        record = h.runtime.fleet.records[worker.id]
        assert record.state == WorkerState.STOPPED and "lost with its host h1" in record.exit_reason
        assert "does not answer (fake)" in record.exit_reason
        assert h.runtime.metrics.crashes.labels("ep")._value.get() == 0
        assert (await h.status(job_id))["status"] == JobStatus.IN_QUEUE, "requeued for another worker"
        assert h.calls("stop_worker") == []
        h.world.lost_hosts.clear()  # the host answers again, its worker still running: stopped
        await h.tick(advance=1)
        await h.tick(advance=1)
        assert h.calls("stop_worker") == [worker.id] and lost.state != "running"

    scenario(body)
