"""The gateway in one process: its ASGI app over a runtime with the fake provider, an in-memory SQLite store
(with GPUFORM_TEST_STORE=postgres: a schema of its own on the tests' PostgreSQL, so the same tests check the
shared queue) and a fake clock. Tests play clients (httpx over ASGI) and workers (the worker protocol with the
token the fleet minted), and drive the reconciler one tick at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from gpuform.gateway.app import build_app
from gpuform.gateway.postgres import PostgresStore
from gpuform.gateway.runtime import Runtime
from gpuform.gateway.sqlite import SQLiteStore
from gpuform.gateway.store import GatewayStore
from gpuform.providers.fake.provider import FakeProvider, World
from gpuform.spec import EndpointPut, EndpointSpec, GatewaySettings, RuntimeConfig
from gpuform.util.hashing import hash_secret
from tests.pg import drop_schema, fresh_schema, postgres_url

LINEAGE = "00000000-0000-4000-8000-harness00001"
ADMIN_KEY = "admin-key"
CLIENT_KEY = "client-key"
OTHER_KEY = "other-key"
T0 = 1_795_000_000.0  # mid-day UTC
TIMINGS = {"lease_timeout": 5, "ping_interval": 1, "reconcile_interval": 1, "take_timeout": 0.2,
           "drain_timeout": 1, "start_backoff": 10, "start_backoff_max": 40, "webhook_retry_delay": 0,
           "result_retention_run": 60, "result_retention_sync": 10}


class FakeClock:
    """Wall-clock time the test moves by hand."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def endpoint_spec(name: str = "ep", **fields: Any) -> EndpointSpec:
    body: dict[str, Any] = {"pool": "gpu", "gateway": "main", "worker": {"template": "echo"}, **fields}
    return EndpointSpec.model_validate(body)


def runtime_config(pool_hosts: list[dict[str, Any]] | None = None, prices: dict[str, float] | None = None,
                   **gateway: Any) -> RuntimeConfig:
    pool = {"provider": "fake", "hosts": pool_hosts or [{"name": "h1", "gpus": ["H100-80GB", "H100-80GB"]}],
            "price_per_gpu_second": prices or {"H100-80GB": 0.001, "cpu": 0.0001}}
    settings = GatewaySettings.model_validate({
        "pool": "gpu", "advertise_url": "http://gateway.test", "timings": TIMINGS,
        "api_keys": {"app": hash_secret(CLIENT_KEY, LINEAGE), "other": hash_secret(OTHER_KEY, LINEAGE)},
        "pools": {"gpu": pool}, **gateway})
    return RuntimeConfig(name="main", lineage=LINEAGE, gateway=settings,
                         admin_key_hash=hash_secret(ADMIN_KEY, LINEAGE), state_dir="/nonexistent",
                         config_dir="/nonexistent", webhook_secret="hook-secret")


@dataclass
class Harness:
    runtime: Runtime
    client: httpx.AsyncClient
    clock: FakeClock
    world: World
    webhooks: list[httpx.Request] = field(default_factory=list)

    def as_key(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def put(self, spec: EndpointSpec, name: str = "ep", secret_env: dict[str, str] | None = None) -> None:
        body = EndpointPut(spec=spec, secret_env=secret_env or {}).model_dump(mode="json")
        resp = await self.client.put(f"/admin/endpoints/{name}", json=body, headers=self.as_key(ADMIN_KEY))
        assert resp.status_code == 200, resp.text

    async def call(self, method: str, path: str, key: str | None = CLIENT_KEY, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, headers={**self.as_key(key), **kwargs.pop("headers", {})},
                                         **kwargs)

    async def run(self, payload: Any, endpoint: str = "ep", key: str = CLIENT_KEY, **extra: Any) -> str:
        resp = await self.call("POST", f"/v2/{endpoint}/run", key, json={"input": payload, **extra})
        assert resp.status_code == 200, resp.text
        job_id: str = resp.json()["id"]
        return job_id

    async def status(self, job_id: str, endpoint: str = "ep", key: str = CLIENT_KEY) -> dict[str, Any]:
        resp = await self.call("GET", f"/v2/{endpoint}/status/{job_id}", key)
        assert resp.status_code == 200, resp.text
        result: dict[str, Any] = resp.json()
        return result

    async def settle(self) -> None:
        """Let background work finish (provider calls run in threads)."""
        for _ in range(50):
            tasks = [t for t in self.runtime.fleet.tasks if not t.done()]
            if not tasks:
                await asyncio.sleep(0)
                return
            await asyncio.wait(tasks, timeout=2)

    async def tick(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        await self.runtime.reconciler.tick(self.clock())
        await self.settle()

    def calls(self, operation: str) -> list[str]:
        return [subject for op, subject in self.world.calls if op == operation]

    def worker(self, worker_id: str | None = None) -> FakeWorker:
        """A worker the fleet started (the newest when not named), played by the test."""
        worker_id = worker_id or list(self.world.launches)[-1]
        launch = self.world.launches[worker_id]
        return FakeWorker(self, worker_id, launch.endpoint, launch.env["RUNPOD_AI_API_KEY"])


@dataclass
class FakeWorker:
    h: Harness
    id: str
    endpoint: str
    token: str

    def _path(self, route: str, job_id: str = "") -> str:
        base = f"/v2/{self.endpoint}/{route}/{self.id}"
        return f"{base}/{job_id}" if job_id else base

    async def take(self) -> dict[str, Any] | None:
        resp = await self.h.call("GET", self._path("job-take"), self.token)
        assert resp.status_code in (200, 204), resp.text
        return resp.json() if resp.status_code == 200 else None

    async def done(self, job_id: str, output: Any = None, raw: bytes | None = None, **body: Any) -> httpx.Response:
        content = raw if raw is not None else json.dumps({"output": output, **body}).encode()
        return await self.h.call("POST", self._path("job-done", job_id), self.token, content=content)

    async def chunk(self, job_id: str, output: Any) -> httpx.Response:
        return await self.h.call("POST", self._path("job-stream", job_id), self.token, json={"output": output})

    async def ping(self, *job_ids: str) -> httpx.Response:
        return await self.h.call("GET", self._path("ping"), self.token, params={"job_id": ",".join(job_ids)})

    async def event(self, phase: str, at: float | None = None) -> httpx.Response:
        return await self.h.call("POST", self._path("worker-event"), self.token,
                                 json={"phase": phase, **({"at": at} if at else {})})

    async def serve_one(self, output: Callable[[dict[str, Any]], Any] = lambda job: {"echo": job["input"]}) -> str:
        job = await self.take()
        assert job is not None, "no job to take"
        resp = await self.done(job["id"], output(job))
        assert resp.json() == {"accepted": True}
        return str(job["id"])


@asynccontextmanager
async def gateway(config: RuntimeConfig | None = None, endpoints: dict[str, EndpointSpec] | None = None,
                  clock: FakeClock | None = None, store: GatewayStore | None = None) -> AsyncIterator[Harness]:
    """A started runtime (no reconcile loop: tests tick it) with its app on an httpx client (its store in
    memory unless one is given)."""
    config = config or runtime_config()
    clock = clock or FakeClock()
    received: list[httpx.Request] = []

    def hook(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    FakeProvider.WORLDS.pop((config.lineage, "gpu"), None)
    schema = None
    if store is None and os.environ.get("GPUFORM_TEST_STORE") == "postgres":
        schema = fresh_schema()  # the whole gateway on PostgreSQL and its shared queue
        store = PostgresStore(postgres_url(), schema)
    runtime = Runtime(config, store if store is not None else SQLiteStore(":memory:"), clock=clock,
                      webhook_transport=httpx.MockTransport(hook))
    app = build_app(runtime, reconcile=False)
    await runtime.start(reconcile=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30) as client:
        h = Harness(runtime, client, clock, FakeProvider.world_of(config.lineage, "gpu"), received)
        for name, spec in (endpoints or {"ep": endpoint_spec()}).items():
            await h.put(spec, name)
        try:
            yield h
        finally:
            await runtime.stop()
            if schema is not None:
                drop_schema(schema)


def scenario(body: Callable[[Harness], Awaitable[None]], **options: Any) -> None:
    """Runs one test body against a fresh in-process gateway (options go to `gateway`)."""

    async def main() -> None:
        async with gateway(**options) as h:
            await body(h)

    asyncio.run(main())
