"""gpuform's worker SDK fails over across the gateway's replicas (GPUFORM_GATEWAY_URLS): a replica that refuses
connections or answers 503 is left for the next one, and a result the worker holds is posted there, not lost.
Two small HTTP servers on loopback play the replicas; one is killed under the worker."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from gpuform.gateway.replicas import layout, worker_urls
from gpuform.worker.failover import Gateways
from gpuform.worker.runner import Settings, Worker

pytestmark = pytest.mark.unit


def test_routes_move_to_the_next_replica_only_when_the_one_in_use_fails() -> None:
    gw = Gateways.from_env("http://h1:8080/v2/ep/job-take/w1?gpu=any", "http://h1:8080,http://h2:8080")
    assert gw.url("http://h1:8080/v2/ep/ping/w1") == "http://h1:8080/v2/ep/ping/w1"
    gw.failed("http://h1:8080/v2/ep/ping/w1")
    assert gw.url("http://h1:8080/v2/ep/ping/w1") == "http://h2:8080/v2/ep/ping/w1"
    gw.failed("http://h1:8080/v2/ep/job-take/w1")  # a late failure of the replica already left: no move back
    assert gw.base == "http://h2:8080"
    gw.failed("http://h2:8080/v2/ep/job-take/w1")
    assert gw.base == "http://h1:8080" and gw.attempts(3) == 6


def test_one_url_or_a_load_balancer_never_moves() -> None:
    gw = Gateways.from_env("http://lb:80/v2/ep/job-take/w1", "")
    gw.failed("http://lb:80/v2/ep/job-take/w1")
    assert gw.base == "http://lb:80" and gw.attempts(3) == 3
    assert gw.url("http://lb:80/v2/ep/job-take/w1") == "http://lb:80/v2/ep/job-take/w1"


def test_workers_get_every_replica_or_the_load_balancer_alone() -> None:
    replicas = ["http://10.77.0.11:8080", "http://10.77.0.12:8080"]
    assert worker_urls("http://10.77.0.12:8080/", replicas) == {
        "GPUFORM_GATEWAY_URLS": "http://10.77.0.12:8080,http://10.77.0.11:8080"}
    assert worker_urls("http://lb.lab:8080", replicas) == {"GPUFORM_GATEWAY_URLS": "http://lb.lab:8080"}
    assert worker_urls("http://127.0.0.1:8080", []) == {"GPUFORM_GATEWAY_URLS": "http://127.0.0.1:8080"}


def test_replicas_run_on_distinct_ports_of_one_machine_or_distinct_hosts_of_a_pool() -> None:
    gw = {"listen": "0.0.0.0:8080", "advertise_url": "http://127.0.0.1:8080", "replicas": 3, "tls": None}
    assert [(r.id, r.listen, r.url) for r in layout(gw, None)] == [
        ("r0", "0.0.0.0:8080", "http://127.0.0.1:8080"), ("r1", "0.0.0.0:8081", "http://127.0.0.1:8081"),
        ("r2", "0.0.0.0:8082", "http://127.0.0.1:8082")]
    hosts = [("h1", "10.77.0.11"), ("h2", "10.77.0.12")]
    two = {**gw, "replicas": 2, "advertise_url": "http://lb:80", "tls": {"cert_file": "c"}}
    assert [(r.host, r.listen, r.url) for r in layout(two, hosts)] == [
        ("h1", "0.0.0.0:8080", "https://10.77.0.11:8080"), ("h2", "0.0.0.0:8080", "https://10.77.0.12:8080")]
    assert [r.url for r in layout({**gw, "replicas": 1}, hosts)] == ["http://127.0.0.1:8080"]  # as before replicas
    with pytest.raises(ValueError, match="3 replicas need 3 hosts"):
        layout(gw, hosts)


@dataclass
class Replica:
    """A stand-in gateway replica: hands out ``jobs`` (or answers ``take_status``), records results."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    take_status: int = 204
    results: dict[str, Any] = field(default_factory=dict)
    takes: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    async def take(self, request: web.Request) -> web.Response:
        self.takes += 1
        if self.take_status != 204:
            return web.Response(status=self.take_status)
        if self.jobs:
            return web.json_response(self.jobs.pop(0))
        await asyncio.sleep(0.05)
        return web.Response(status=204)

    async def done(self, request: web.Request) -> web.Response:
        self.results[request.match_info["job"]] = json.loads(await request.read())
        return web.json_response({})

    async def idle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.json_response({})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v2/ep/job-take/w1", self.take)
        app.router.add_get("/v2/ep/job-stop/w1", self.idle)
        app.router.add_get("/v2/ep/ping/w1", self.idle)
        app.router.add_post("/v2/ep/job-done/w1/{job}", self.done)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"

    async def kill(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def _settings(first: str, urls: list[str]) -> Settings:
    return Settings(take_url=f"{first}/v2/ep/job-take/w1?gpu=any", done_url=f"{first}/v2/ep/job-done/w1/$ID?gpu=any",
                    stream_url=f"{first}/v2/ep/job-stream/w1/$ID?gpu=any", ping_url=f"{first}/v2/ep/ping/w1?gpu=any",
                    events_url="", worker_id="w1", token="t", ping_interval=1.0, concurrency=1, take_timeout=1.0,
                    gateway_urls=",".join(urls))


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_result_held_when_its_replica_dies_is_posted_to_the_next_one() -> None:
    async def scenario() -> None:
        a, b = Replica(jobs=[{"id": "j1", "input": {"n": 1}}]), Replica()
        url_a, url_b = await a.start(), await b.start()
        release = asyncio.Event()

        async def handler(job: dict[str, Any]) -> dict[str, Any]:
            await release.wait()
            return {"n": job["input"]["n"] + 1}

        worker = Worker(handler, _settings(url_a, [url_a, url_b]))
        running = asyncio.create_task(worker.run())
        await _until(lambda: "j1" in worker.running)
        await a.kill()  # the replica that handed out the job dies while the worker holds it
        release.set()
        await _until(lambda: "j1" in b.results)
        assert b.results["j1"] == {"output": {"n": 2}} and worker.gateways.base == url_b
        worker.stopping.set()
        await asyncio.wait_for(running, 10)
        await b.kill()

    asyncio.run(scenario())


def test_a_replica_answering_503_is_left_for_the_next_one() -> None:
    async def scenario() -> None:
        a, b = Replica(take_status=503), Replica(jobs=[{"id": "j2", "input": {}}])
        url_a, url_b = await a.start(), await b.start()
        worker = Worker(lambda job: {"ok": True}, _settings(url_a, [url_a, url_b]))
        running = asyncio.create_task(worker.run())
        await _until(lambda: "j2" in b.results)
        assert a.takes >= 1 and b.results["j2"] == {"output": {"ok": True}}
        worker.stopping.set()
        await asyncio.wait_for(running, 10)
        await a.kill()
        await b.kill()

    asyncio.run(scenario())
