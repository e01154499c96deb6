"""Client requests during a gateway change: what a steady load sees while `gpuform apply` changes the gateway.

Applies a local deployment (one echo endpoint, min_workers 2), runs CLIENTS threads sending `runsync`
requests back to back, and while they run applies changes to the gateway: adding an API key, then changing
a timing, each its own apply (what a team does most). Prints, per phase (steady load before the changes,
the applies themselves), the requests sent, failed (any answer but 200 COMPLETED, or a connection error) and
the latency percentiles and maximum; then the same for a change that needs a restart (the port is fixed, so
the store-free restart field used is `limits`), for comparison.

Run it on two checkouts to compare (the numbers are this code's): before hot reload every gateway change
restarted the gateway.

Usage: python bench/gateway_reload.py [--clients 8] [--seconds 3]
Writes bench/results/gateway_reload.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(port: int, keys: int, lease: str = "30s", body_limit: int = 1_000_000) -> str:
    extra = "".join(f", extra{i}: extra-key-{i}" for i in range(keys))
    return textwrap.dedent(f"""
        pools:
          here: {{provider: local, price_per_gpu_second: {{cpu: 0.001}}}}
        gateway:
          main:
            pool: here
            listen: 127.0.0.1:{port}
            api_keys: {{bench: {KEY}{extra}}}
            timings: {{lease_timeout: {lease}, reconcile_interval: 0.2s}}
            limits: {{max_other_body: {body_limit}}}
        endpoints:
          echo:
            pool: here
            worker: {{template: echo}}
            scaling: {{min_workers: 2, max_workers: 2, idle_timeout: 60s}}
        """).lstrip()


def gpuform(directory: Path, *args: str) -> float:
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), *args], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"gpuform {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.monotonic() - began


@dataclass
class Load:
    """CLIENTS threads sending runsync back to back; each request recorded as (start, latency, ok)."""

    url: str
    clients: int
    records: list[tuple[float, float, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in threads:
            t.start()
        return threads

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                          trust_env=False) as http:
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    resp = http.post("/v2/echo/runsync", json={"input": {"n": 1}})
                    ok = resp.status_code == 200 and resp.json().get("status") == "COMPLETED"
                except httpx.HTTPError:
                    ok = False
                    time.sleep(0.05)
                self.records.append((began, time.monotonic() - began, ok))

    def window(self, start: float, end: float) -> dict[str, Any]:
        rows = [r for r in self.records if start <= r[0] <= end]
        lat = sorted(r[1] * 1000 for r in rows)
        if not lat:
            return {"requests": 0, "failed": 0}
        return {"requests": len(rows), "failed": sum(1 for r in rows if not r[2]),
                "p50_ms": round(statistics.median(lat), 1), "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1),
                "max_ms": round(lat[-1], 1)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpuform-bench-reload-") as tmp:
        directory = Path(tmp)
        (directory / "gpuform.yaml").write_text(config(port, 0))
        gpuform(directory, "apply", "-auto-approve")
        load = Load(url, args.clients)
        threads = load.run()
        try:
            time.sleep(args.seconds)
            t0 = time.monotonic()
            out["steady"] = load.window(t0 - args.seconds, t0)
            changes = [("add an API key", config(port, 1)), ("change a timing", config(port, 1, lease="20s")),
                       ("remove an API key", config(port, 0, lease="20s")),
                       ("change an edge limit (restart)", config(port, 0, lease="20s", body_limit=2_000_000))]
            for what, text in changes:
                (directory / "gpuform.yaml").write_text(text)
                began = time.monotonic()
                took = gpuform(directory, "apply", "-auto-approve")
                time.sleep(1.0)  # requests started just after the apply returned still count
                out[what] = {**load.window(began, time.monotonic()), "apply_s": round(took, 2)}
        finally:
            load.stop.set()
            for t in threads:
                t.join(timeout=35)
            gpuform(directory, "destroy", "-auto-approve")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    result = measure(args)
    print(f"{'phase':34} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'apply s':>8}")
    for phase, row in result.items():
        print(f"{phase:34} {row['requests']:>8} {row['failed']:>6} {row.get('p50_ms', '-'):>8} "
              f"{row.get('p99_ms', '-'):>8} {row.get('max_ms', '-'):>8} {row.get('apply_s', '-'):>8}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "gateway_reload.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
