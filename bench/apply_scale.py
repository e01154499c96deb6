"""Apply, plan with refresh, and destroy at scale: N endpoints behind one real gateway on this machine.

Runs the real CLI in subprocesses, as a user would (`gpuform apply -auto-approve`, `gpuform plan`,
`gpuform destroy -auto-approve`), against the local backend and, when the test PostgreSQL runs
(.ci/setup/postgres.sh), the postgres backend. Every endpoint has min_workers 0, so what is measured is
gpuform's own work: registering endpoints with the gateway, refreshing them, keeping state safe.

Prints each figure and its ratio to the issue's goal (1,000 endpoints: plan with refresh <= 2 s,
apply <= 10 s, destroy <= 15 s), and the final state's size.

Usage: python bench/apply_scale.py [--endpoints 1000] [--backend local|postgres|both]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

GOALS = {"apply": 10.0, "plan (refresh)": 2.0, "destroy": 15.0}
PG_INFO = Path("/var/lib/gpuform-test/postgres.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_yaml(endpoints: int, port: int, backend: str) -> str:
    lines = []
    if backend == "postgres":
        lines.append('backend: {type: postgres, url: "${env.GPUFORM_BACKEND_URL}", schema_name: "${env.BENCH_SCHEMA}"}')
    lines += ["pools:", "  here: {provider: local, price_per_gpu_second: {cpu: 0.00001}}",
              "gateway:", f"  main: {{pool: here, listen: '127.0.0.1:{port}', api_keys: {{app: bench-key}}}}",
              "endpoints:"]
    for i in range(endpoints):
        lines.append(f"  ep{i}: {{pool: here, worker: {{template: echo}}, "
                     f"scaling: {{min_workers: 0, max_workers: {2 + i % 3}, idle_timeout: 30s}}}}")
    return "\n".join(lines) + "\n"


def gpuform(directory: Path, env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), *args], capture_output=True,
                          text=True, env=env, check=False, timeout=1800)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 2):
        raise SystemExit(f"gpuform {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return elapsed, proc


def run_backend(backend: str, endpoints: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        env = {**os.environ, "NO_COLOR": "1", "GPUFORM_DATA_DIR": str(directory / "data")}
        schema = "bench_" + uuid.uuid4().hex[:10]
        if backend == "postgres":
            env |= {"GPUFORM_BACKEND_URL": json.loads(PG_INFO.read_text())["url"], "BENCH_SCHEMA": schema,
                    "GPUFORM_SECRETS_KEY": "bench-team-key"}
        (directory / "gpuform.yaml").write_text(config_yaml(endpoints, free_port(), backend))
        figures: dict[str, float] = {}
        try:
            figures["apply"], _ = gpuform(directory, env, "apply", "-auto-approve")
            figures["plan (refresh)"], proc = gpuform(directory, env, "plan", "-detailed-exitcode")
            if proc.returncode != 0:
                raise SystemExit(f"plan after apply shows changes:\n{proc.stdout[-2000:]}")
            state_bytes = len(gpuform(directory, env, "state", "pull")[1].stdout)
            figures["state MB"] = state_bytes / 1e6
        finally:
            figures["destroy"], _ = gpuform(directory, env, "destroy", "-auto-approve")
            if backend == "postgres":
                import psycopg

                with psycopg.connect(env["GPUFORM_BACKEND_URL"], autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--backend", choices=["local", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = ["local", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and not PG_INFO.exists():
        print("postgres backend skipped: the test PostgreSQL is not running (.ci/setup/postgres.sh)")
        backends.remove("postgres")
    scale = args.endpoints / 1000
    print(f"{args.endpoints} endpoints (min_workers 0) behind one local gateway; goals scaled to "
          f"{args.endpoints} endpoints")
    for backend in backends:
        figures = run_backend(backend, args.endpoints)
        for name, goal in GOALS.items():
            value = figures[name]
            verdict = "ok" if value <= goal * scale else "OVER GOAL"
            print(f"  {backend:8s} {name:15s} {value:7.2f} s  goal {goal * scale:6.2f} s  "
                  f"ratio {value / (goal * scale):5.2f}  {verdict}")
        print(f"  {backend:8s} {'state size':15s} {figures['state MB']:7.2f} MB")


if __name__ == "__main__":
    main()
