"""The example HAProxy (examples/ha/haproxy.cfg) in front of two stand-in replicas on loopback: a replica whose
/healthz answers 503 (a gateway draining before its port closes) gets no new requests but finishes the ones it
holds, so a rolling restart drops nothing; a replica that stops answering its checks (its host lost) is marked
down and the requests it held end at once, for their clients to resend, instead of waiting out `timeout server`."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests import haproxy
from tests.conftest import free_port
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Replica:
    """An HTTP server standing in for a gateway replica: /healthz answers ``health`` (or hangs when ``hang``),
    /slow?s=N answers after N seconds, anything else at once; each answer names the replica."""

    name: str
    health: int = 200
    hang: threading.Event = field(default_factory=threading.Event)
    served: list[str] = field(default_factory=list)

    def start(self) -> int:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = 200
                if self.path == "/healthz":
                    if replica.hang.is_set():
                        time.sleep(30)
                    status = replica.health
                else:
                    replica.served.append(self.path)
                    if self.path.startswith("/slow"):
                        time.sleep(float(self.path.split("s=")[1]))
                body = replica.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return int(self.server.server_address[1])


@dataclass
class Balancer:
    url: str
    stats: str
    log: Path

    def states(self) -> dict[str, str]:
        """Each replica's state on HAProxy's status page; none while HAProxy does not answer yet."""
        try:
            return haproxy.states(self.stats)
        except httpx.ConnectError:
            return {}


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[Balancer, Replica, Replica]]:
    r0, r1 = Replica("r0"), Replica("r1")
    port, stats = free_port(), free_port()
    env = {**os.environ, "GPUFORM_LB_BIND": f"127.0.0.1:{port}", "GPUFORM_R0": f"127.0.0.1:{r0.start()}",
           "GPUFORM_R1": f"127.0.0.1:{r1.start()}", "GPUFORM_LB_STATS": f"127.0.0.1:{stats}"}
    log = tmp_path / "haproxy.log"
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(haproxy.HAPROXY_CFG)], env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))
    balancer = Balancer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats}/stats;csv", log)
    try:
        wait_for(lambda: balancer.states() == {"r0": "UP", "r1": "UP"}, 15, interval=0.2,
                 what="haproxy to see both replicas up")
        yield balancer, r0, r1
    finally:
        proc.terminate()
        proc.wait(10)
        for replica in (r0, r1):
            replica.hang.clear()
            replica.server.shutdown()


class Slow:
    """A request through the balancer that a replica holds for ``seconds``, on a thread."""

    def __init__(self, url: str, seconds: float) -> None:
        self.answer: str | int | None = None
        self.took = 0.0

        def run() -> None:
            started = time.monotonic()
            try:
                resp = httpx.get(f"{url}/slow?s={seconds}", timeout=60, trust_env=False)
                self.answer = resp.status_code if resp.status_code != 200 else resp.text
            except httpx.HTTPError as exc:
                self.answer = type(exc).__name__
            self.took = time.monotonic() - started

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()


def _holder(slow: Slow, r0: Replica, r1: Replica) -> tuple[Replica, Replica]:
    wait_for(lambda: r0.served or r1.served, 5, interval=0.02, what="a replica to receive the slow request")
    return (r0, r1) if r0.served else (r1, r0)


def test_a_draining_replica_finishes_what_it_holds_and_gets_nothing_new(
        balanced: tuple[Balancer, Replica, Replica]) -> None:
    balancer, r0, r1 = balanced
    slow = Slow(balancer.url, 6)
    holder, other = _holder(slow, r0, r1)
    holder.health = 503  # it drains: what a stopping gateway's /healthz answers before its port closes
    wait_for(lambda: not balancer.states()[holder.name].startswith("UP"), 10, interval=0.1, what="haproxy to take it out")
    state = balancer.states()[holder.name]
    answers = {httpx.get(f"{balancer.url}/fast", trust_env=False).text for _ in range(20)}
    slow.thread.join(30)
    assert state == "NOLB", balancer.states()  # up, but no load balanced to it
    assert answers == {other.name}, "a draining replica gets no new request"
    assert slow.answer == holder.name, f"the request it held was cut: {slow.answer}"


def test_a_replica_that_stops_answering_is_marked_down_and_ends_the_requests_it_held(
        balanced: tuple[Balancer, Replica, Replica]) -> None:
    balancer, r0, r1 = balanced
    slow = Slow(balancer.url, 40)
    holder, other = _holder(slow, r0, r1)
    holder.hang.set()  # its host is gone: checks time out
    slow.thread.join(15)
    assert balancer.states()[holder.name] == "DOWN", balancer.states()
    assert slow.answer is not None and slow.answer != holder.name and slow.took < 15, (slow.answer, slow.took)
    assert httpx.get(f"{balancer.url}/fast", trust_env=False).text == other.name
