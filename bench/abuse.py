"""Full-size attacks on a real gateway (`gpuform apply` on this machine, an echo worker), each with a probe client
sending warm /runsync requests throughout: its p99 during the attack (goal <= 50 ms), the answer the attacker
got, the gateway's memory, and for the flood how many jobs were accepted and whether every one completed.

Attacks: one 150 MB and one 300 MB header; 18,000 idle connections; a 500 MB chunked body; a flood of
40,000 /run jobs. (tests/security runs the same attacks scaled down, in CI.)
Usage: python bench/abuse.py [--flood 40000] [--idle 18000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

KEY = "abuse-key"
GOAL_P99_MS = 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gpuform(directory: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), *args], check=True, capture_output=True,
                   env={**os.environ, "NO_COLOR": "1"})


def gateway_pid(directory: Path) -> int:
    """The gateway of the deployment in ``directory``: its configuration lives in the local pool's directory."""
    state = json.loads((directory / "state" / "gpuform.state.json").read_text())
    where = next(r["computed"]["data_dir"] for r in state["resources"] if r["kind"] == "pool")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[1:3] == [b"-m", b"gpuform.gateway"] and any(where.encode() in a for a in argv):  # not its supervisor
                return int(entry)
    raise SystemExit("no gateway process")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Probe(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.latencies, self.failures, self.done = url, [], 0, threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            while not self.done.is_set():
                started = time.perf_counter()
                try:
                    ok = http.post("/v2/echo/runsync", json={"input": 1}).json().get("status") == "COMPLETED"
                except (httpx.HTTPError, ValueError):
                    ok = False
                if ok:
                    self.latencies.append((time.perf_counter() - started) * 1000)
                else:
                    self.failures += 1
                time.sleep(0.01)

    def p99(self) -> float:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("inf")


def raw(port: int, chunks: Callable[[], object], timeout: float = 120) -> tuple[int, float]:
    """Send the attack's bytes; return the status the gateway answered (0: none) and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for chunk in chunks():  # type: ignore[attr-defined]
                sock.sendall(chunk)
        except OSError:
            pass
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


def header_attack(port: int, megabytes: int) -> Callable[[], str]:
    def attack() -> str:
        def chunks() -> object:
            yield b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
            block = b"a" * (1 << 20)
            for _ in range(megabytes):
                yield block
            yield b"\r\n\r\n"
        status, took = raw(port, chunks)
        return f"answered {status} after {took:.2f} s"
    return attack


def body_attack(port: int, megabytes: int) -> Callable[[], str]:
    def attack() -> str:
        def chunks() -> object:
            yield (b"POST /v2/echo/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                   + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            block = b"%x\r\n%s\r\n" % (1 << 20, b"a" * (1 << 20))
            for _ in range(megabytes):
                yield block
        status, took = raw(port, chunks)
        return f"answered {status} after {took:.2f} s"
    return attack


def idle_attack(port: int, count: int) -> Callable[[], str]:
    def attack() -> str:
        socks, refused = [], 0
        for _ in range(count):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                refused += 1
        time.sleep(12)  # past the header timeout
        answered = {}
        for sock in socks:
            sock.settimeout(0.2)
            try:
                data = sock.recv(64)
            except OSError:
                data = b"?"
            key = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else ("closed" if not data
                                                                                          else "open")
            answered[key] = answered.get(key, 0) + 1
            sock.close()
        return f"{len(socks)} opened ({refused} refused at connect): {answered}"
    return attack


def flood_attack(url: str, jobs: int) -> Callable[[], str]:
    def attack() -> str:
        accepted, refused = [], 0
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                          limits=httpx.Limits(max_connections=8)) as http:
            for i in range(jobs):
                resp = http.post("/v2/echo/run", json={"input": {"n": i}})
                if resp.status_code == 200:
                    accepted.append(resp.json()["id"])
                else:
                    refused += 1
            started = time.monotonic()
            while http.get(f"/v2/echo/status/{accepted[-1]}").json()["status"] != "COMPLETED":
                time.sleep(0.5)
            drained = time.monotonic() - started
            lost = sum(http.get(f"/v2/echo/status/{j}").json()["status"] != "COMPLETED" for j in accepted[::97])
        return f"{len(accepted)} accepted, {refused} refused, drained in {drained:.1f} s, {lost} lost (sampled)"
    return attack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=40_000)
    parser.add_argument("--idle", type=int, default=18_000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        directory, port = Path(tmp), free_port()
        (directory / "gpuform.yaml").write_text(textwrap.dedent(f"""
            pools: {{here: {{provider: local}}}}
            gateway:
              main:
                pool: here
                listen: 127.0.0.1:{port}
                api_keys: {{abuse: {KEY}}}
                log_level: warning
                limits: {{max_connections_per_peer: 20000, max_connections: 30000}}
            endpoints:
              echo:
                pool: here
                worker: {{template: echo, concurrency: 16}}
                scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 1h}}
            """))
        gpuform(directory, "apply", "--auto-approve")
        url = f"http://127.0.0.1:{port}"
        try:
            pid = gateway_pid(directory)
            attacks = [("150 MB header", header_attack(port, 150)), ("300 MB header", header_attack(port, 300)),
                       (f"{args.idle} idle connections", idle_attack(port, args.idle)),
                       ("500 MB chunked body", body_attack(port, 500)),
                       (f"flood of {args.flood} jobs", flood_attack(url, args.flood))]
            print(f"{'attack':28s} {'probe p99':>10s} {'probe fails':>11s} {'gateway RSS':>16s}  outcome")
            for name, attack in attacks:
                before = rss_mb(pid)
                probe = Probe(url)
                probe.start()
                time.sleep(0.5)
                outcome = attack()
                peak = rss_mb(pid)
                probe.done.set()
                probe.join()
                mark = "ok" if probe.p99() <= GOAL_P99_MS and not probe.failures else "MISSED"
                print(f"{name:28s} {probe.p99():8.1f}ms {probe.failures:11d} {before:6.0f} -> {peak:5.0f} MB  "
                      f"{outcome} [{mark}]", flush=True)
        finally:
            gpuform(directory, "destroy", "--auto-approve")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
