"""The edge in one process: the guarded protocol on a real socket (uvicorn in this event loop), webhook
destination policy, keys' rights and limits, and a full disk."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from gpuform.config.schema import GatewayLimits, WebhookPolicy
from gpuform.errors import StoreFull
from gpuform.gateway import destinations
from gpuform.gateway.auth import TokenBucket
from gpuform.gateway.edge import guarded_protocol
from gpuform.gateway.jsonbody import safe_text
from gpuform.gateway.queue import MemoryBudget, ResultCache
from gpuform.gateway.server import route_body_limit
from gpuform.spec import GatewaySettings
from tests.gateway_harness import ADMIN_KEY, CLIENT_KEY, OTHER_KEY, Harness, gateway, runtime_config

pytestmark = pytest.mark.unit
LIMITS = GatewayLimits(max_header_bytes=4096, max_headers=20, max_request_line=1024, header_timeout=0.3,
                       body_timeout=0.3, max_connections=50, max_connections_per_peer=3)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


@asynccontextmanager
async def edge(limits: GatewayLimits = LIMITS, trusted: list[str] | None = None,
               proxy: bool = False) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    protocol = guarded_protocol(limits, lambda method, path: 1000 if path == "/small" else 100_000, trusted or [],
                                proxy)
    server = uvicorn.Server(uvicorn.Config(echo_app, http=protocol, log_level="error", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def exchange(port: int, data: bytes, wait: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), wait):
            out += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return out


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def test_the_edge_refuses_big_slow_and_crowding_requests_and_serves_the_rest() -> None:
    async def body() -> None:
        async with edge() as port:
            get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert status(await exchange(port, get)) == 200
            assert status(await exchange(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 200_000 + b"\r\n\r\n")) == 431
            assert status(await exchange(port, b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 30 + b"\r\n")) == 431
            assert status(await exchange(port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")) == 414
            assert status(await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n")) == 408
            assert status(await exchange(port, b"")) == 408
            small = b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
            assert status(await exchange(port, small)) == 413
            chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
            chunked = b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3
            assert status(await exchange(port, chunked)) == 413
            stalled = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"
            assert status(await exchange(port, stalled)) == 408
            ok = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            assert b"\r\n3\r\n" in await exchange(port, ok), "a body within the limits reaches the app"
            crowd = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            fourth = await exchange(port, get)
            assert status(fourth) == 429 and b"retry-after: 1" in fourth
            for _, writer in crowd:
                writer.close()
            await asyncio.sleep(0.1)
            assert status(await exchange(port, get)) == 200, "served again once the crowd left"
            assert status(await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")) == 400

    run(body)


def test_a_trusted_proxy_names_the_client_with_a_proxy_protocol_line() -> None:
    async def body() -> None:
        async with edge(trusted=["127.0.0.0/8"], proxy=True) as port:
            line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n"
            get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert status(await exchange(port, line + get)) == 200
            assert status(await exchange(port, b"PROXY nonsense\r\n" + get)) == 400
            for _ in range(5):  # each connection counts against its real client, not against the proxy
                assert status(await exchange(port, line.replace(b"203.0.113.7", b"203.0.113.8") + get)) == 200

    run(body)


def test_each_route_family_has_its_body_limit() -> None:
    settings = runtime_config().gateway
    limit = route_body_limit(GatewaySettings.model_validate(settings.model_dump()))
    assert limit("POST", "/v2/ep/run") == settings.max_payload_run
    assert limit("POST", "/v2/ep/runsync") == limit("POST", "/v1/chat/completions") == settings.max_payload_runsync
    assert limit("POST", "/v2/ep/job-done/w/j") == settings.max_payload_runsync
    assert limit("PUT", "/admin/endpoints/x") == settings.limits.max_admin_body
    assert limit("POST", "/v2/ep/cancel/j") == settings.limits.max_other_body


@pytest.mark.parametrize(("url", "policy", "allowed"), [
    ("https://93.184.216.34/x", WebhookPolicy(), True),
    ("http://127.0.0.1:8080/x", WebhookPolicy(), False),
    ("http://localhost/x", WebhookPolicy(), False),
    ("http://10.0.0.5/x", WebhookPolicy(), False),
    ("http://169.254.169.254/latest", WebhookPolicy(), False),
    ("http://[::ffff:127.0.0.1]/x", WebhookPolicy(), False),
    ("http://10.0.0.5/x", WebhookPolicy(allow_private=True), True),
    ("http://10.0.0.5/x", WebhookPolicy(allow=["10.0.0.0/24"]), True),
    ("ftp://example.com/x", WebhookPolicy(), False),
])
def test_webhook_destinations_follow_the_policy(url: str, policy: WebhookPolicy, allowed: bool) -> None:
    if allowed:
        destinations.check_url(url, policy)
    else:
        with pytest.raises(destinations.Refused):
            destinations.check_url(url, policy)


def test_a_name_that_resolves_to_a_private_address_is_refused_at_send_time(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake(host: str, port: int, **kwargs: Any) -> list[Any]:
        answer = {"rebind.example": "127.0.0.1", "public.example": "93.184.216.34"}[host]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, port))]

    async def body() -> None:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake)
        with pytest.raises(destinations.Refused, match=r"rebind\.example"):
            await destinations.resolve_checked("http://rebind.example/x", WebhookPolicy())
        assert await destinations.resolve_checked("https://public.example/x", WebhookPolicy()) == "93.184.216.34"
        listed = WebhookPolicy(allow=["rebind.example"])
        assert ipaddress.ip_address(await destinations.resolve_checked("http://rebind.example/x", listed))

    run(body)


def test_keys_see_their_own_jobs_unless_shared_and_keep_their_quotas() -> None:
    config = runtime_config(api_keys={"app": _hashed(CLIENT_KEY), "other": _hashed(OTHER_KEY),
                                      "team": {"key": _hashed("team-key"), "shared": True},
                                      "capped": {"key": _hashed("capped-key"), "max_queued": 2, "max_open_jobs": 3},
                                      "prom": {"key": _hashed("prom-key"), "scope": "metrics"}})

    async def body(h: Harness) -> None:
        h.world.fail_starts = 100  # nobody takes the jobs
        job = (await h.call("POST", "/v2/ep/run", json={"input": "mine"}, headers={"Idempotency-Key": "k"})).json()["id"]
        assert (await h.call("GET", f"/v2/ep/status/{job}", OTHER_KEY)).status_code == 404
        assert (await h.call("POST", f"/v2/ep/cancel/{job}", OTHER_KEY)).status_code == 404
        assert (await h.call("GET", f"/v2/ep/status/{job}", "team-key")).status_code == 200
        assert (await h.call("GET", f"/v2/ep/status/{job}", ADMIN_KEY)).status_code == 200
        again = await h.call("POST", "/v2/ep/run", OTHER_KEY, json={"input": 1}, headers={"Idempotency-Key": "k"})
        assert again.json()["id"] != job
        purged = await h.call("POST", "/v2/ep/purge-queue", OTHER_KEY)
        assert purged.json()["removed"] == 1 and (await h.status(job))["status"] == "IN_QUEUE", "only its own"
        codes = [(await h.call("POST", "/v2/ep/run", "capped-key", json={"input": i})).status_code for i in range(4)]
        assert codes == [200, 200, 429, 429]
        assert (await h.call("POST", "/v2/ep/run", "prom-key", json={"input": 1})).status_code == 403
        assert (await h.call("GET", "/metrics", "prom-key")).status_code == 200

    async def main() -> None:
        async with gateway(config=config) as h:
            await body(h)

    asyncio.run(main())


def _hashed(key: str) -> str:
    from gpuform.util.hashing import hash_secret
    from tests.gateway_harness import LINEAGE

    return hash_secret(key, LINEAGE)


def test_a_full_disk_is_a_507_and_nothing_is_acknowledged() -> None:
    async def main() -> None:
        async with gateway() as h:
            def full(job: Any) -> int:
                raise StoreFull("the gateway's disk is full (test)", "Free disk space.")

            h.runtime.store.jobs.insert = full  # type: ignore[method-assign]
            resp = await h.call("POST", "/v2/ep/run", json={"input": 1})
            assert resp.status_code == 507 and resp.headers["Retry-After"] == "30"
            assert "nothing was accepted" in resp.json()["error"]
            assert h.runtime.queue.stats("ep").queued == 0

    asyncio.run(main())


def test_rate_limits_refill_over_time() -> None:
    bucket = TokenBucket(rate=2, burst=2, at=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert bucket.take(1.0) == 0.0


def test_results_are_cached_by_bytes_and_count() -> None:
    from gpuform.gateway.jobs import Job

    cache = ResultCache(MemoryBudget(results=1000, result_items=3, result_item=600))
    jobs = [Job(id=str(i), endpoint="e", input=None, created_at=0, execution_timeout=1, ttl=1, size=size)
            for i, size in enumerate([400, 400, 700, 100, 100, 100])]
    assert cache.put(jobs[0]) == [] and cache.put(jobs[1]) == []
    assert cache.put(jobs[2]) == [] and "2" not in cache, "a result over the item limit stays in the store"
    assert [j.id for j in cache.put(jobs[3])] == []
    assert [j.id for j in cache.put(jobs[4])] == ["0"], "count limit: three at most"
    assert cache.bytes == 600 and len(cache) == 3


def test_worker_text_reaches_clients_escaped_and_short() -> None:
    assert safe_text("line\nwith\x1b[31m colour \u202e and more") == "line with?[31m colour ? and more"
    assert len(safe_text("x" * 10_000)) == 500 and safe_text({"a": [1]}) == '{"a": [1]}'
