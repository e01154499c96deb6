"""Attacks on a real gateway (uvicorn on a socket, an echo worker), scaled down: whatever one client sends, a
probe client keeps completing warm /runsync requests, nothing answers 5xx, no accepted job is lost, and the
gateway's memory stays bounded. bench/abuse.py runs the full-size attacks and prints their figures."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gpuform.util import procs
from tests.conftest import pool_dir
from tests.helpers import KEY, Deployment, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security]

ENDPOINT = """
endpoints:
  echo:
    pool: here
    worker: {template: echo, concurrency: 8}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
"""
LIMITS = "    limits: {header_timeout: 2s, body_timeout: 2s, max_connections_per_peer: 400}\n"


def gateway_pid(workdir: Path) -> int:
    """The gateway process of the deployment in ``workdir`` (its configuration lives in the pool's directory)."""
    where = str(pool_dir(workdir))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = procs.cmdline(int(entry))
            if argv[1:3] == ["-m", "gpuform.gateway"] and any(where in a for a in argv):  # not its supervisor
                return int(entry)
    raise AssertionError("no gateway process found")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Probe:
    """A well-behaved client sending warm /runsync requests in a loop, recording latencies and failures."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    resp = http.post("/v2/echo/runsync", json={"input": {"probe": 1}})
                    ok = resp.status_code == 200 and resp.json().get("status") == "COMPLETED"
                except httpx.HTTPError as exc:
                    ok, resp = False, None
                    self.failures.append(type(exc).__name__)
                if ok:
                    self.latencies.append(time.perf_counter() - started)
                elif resp is not None:
                    self.failures.append(f"{resp.status_code} {resp.text[:100]}")
                time.sleep(0.02)

    @property
    def p99_ms(self) -> float:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(0.99 * len(values)))] * 1000 if values else float("inf")


@contextmanager
def probing(url: str) -> Iterator[Probe]:
    probe = Probe(url)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    time.sleep(0.3)
    try:
        yield probe
    finally:
        time.sleep(0.3)
        probe.stop.set()
        thread.join(timeout=60)


def raw(port: int, data: bytes, read_for: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and return whatever the gateway answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as sock:
        with suppress(OSError):
            sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture
def gateway(deployment: Deployment) -> Deployment:
    deployment.apply(ENDPOINT, gateway_extra=LIMITS)
    wait_for(lambda: deployment.status("echo")["ready_workers"] == 1, 30, what="a warm worker")
    return deployment


def _attack(gateway: Deployment, attack: Callable[[], None]) -> Probe:
    with probing(gateway.url) as probe:
        attack()
    assert not probe.failures, probe.failures[:5]
    assert len(probe.latencies) >= 3, "the probe kept completing during the attack"
    return probe


def test_oversized_and_slow_requests_get_4xx_and_never_stall_others(gateway: Deployment) -> None:
    port, pid = gateway.port, gateway_pid(gateway.workdir)
    before = rss_mb(pid)
    answers: dict[str, bytes] = {}

    def attack() -> None:
        answers["header"] = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n")
        answers["many"] = raw(port, b"GET /healthz HTTP/1.1\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n")
        answers["line"] = raw(port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")
        answers["slow"] = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b"a" * (1 << 20))
        answers["chunked"] = raw(port, b"POST /v2/echo/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                 + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 30)
        answers["declared"] = raw(port, b"POST /v2/echo/run HTTP/1.1\r\nHost: x\r\nContent-Length: 30000000\r\n"
                                  b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n")
        answers["stalled"] = raw(port, b"POST /v2/echo/run HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                                 b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n{")

    probe = _attack(gateway, attack)
    expected = {"header": 431, "many": 431, "line": 414, "slow": 408, "chunked": 413, "declared": 413,
                "stalled": 408}
    assert {k: status_of(v) for k, v in answers.items()} == expected, answers
    assert all(b'"error"' in v for v in answers.values()), "JSON error bodies"
    assert rss_mb(pid) - before < 100, "30 MB bodies and 2 MB headers were never held whole"
    print(f"probe during size/slow attacks: {len(probe.latencies)} requests, p99 {probe.p99_ms:.1f} ms")


def test_idle_connections_are_closed_and_capped_per_peer(gateway: Deployment) -> None:
    socks: list[socket.socket] = []

    def attack() -> None:
        for _ in range(500):
            try:
                socks.append(socket.create_connection(("127.0.0.1", gateway.port), timeout=5))
            except OSError:
                break
        time.sleep(3)  # past header_timeout (2 s): every idle one is answered 408 and closed

    probe = _attack(gateway, attack)
    closed = 0
    for sock in socks:
        sock.settimeout(0.5)
        try:
            data = sock.recv(4096)
        except OSError:
            data = b"-"
        closed += data == b"" or status_of(data) in (408, 429)
        sock.close()
    assert closed == len(socks), f"{len(socks) - closed} idle connections stayed open"
    print(f"probe during 500 idle connections: p99 {probe.p99_ms:.1f} ms")


def test_a_flood_is_held_or_refused_and_no_accepted_job_is_lost(gateway: Deployment) -> None:
    accepted: list[str] = []
    refused = 0

    def attack() -> None:
        nonlocal refused
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
            for i in range(1500):
                resp = http.post("/v2/echo/run", json={"input": {"n": i}})
                assert resp.status_code in (200, 429), resp.text
                if resp.status_code == 200:
                    accepted.append(resp.json()["id"])
                else:
                    refused += 1

    _attack(gateway, attack)
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        def done() -> bool:
            return all(http.get(f"/v2/echo/status/{job}").json()["status"] == "COMPLETED" for job in accepted[-20:])

        wait_for(done, 120, 0.5, "the flood to drain")
        statuses = [http.get(f"/v2/echo/status/{job}").json()["status"] for job in accepted]
    assert statuses.count("COMPLETED") == len(accepted), "every accepted job completed"
    print(f"flood: {len(accepted)} accepted, {refused} refused with 429")
