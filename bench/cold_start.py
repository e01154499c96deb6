"""Cold starts, measured end to end in production shape.

(1) vLLM (CPU, tiny random Llama, local provider): for each cold start, the timeline the worker and the
    gateway record (job queued, start requested, process up, vLLM launched, vLLM ready, first job, first
    token) and the client's time to first token; the platform's share is everything that is not vLLM's own
    initialisation (vLLM launched -> vLLM ready). Target: platform share <= 0.5 s.
(2) docker (this machine's dockerd, a small image): a fresh worker container vs a kept, stopped one restarted
    for the next worker (gpuform's FlashBoot).

Usage: python bench/cold_start.py [--runs 3] [--skip-vllm] [--skip-docker] [--base-image gpuform-test/base:bookworm]
Writes bench/results/cold_start.json.
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
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KEY = "bench-key"
VENV = Path(os.environ.get("GPUFORM_VLLM_VENV", "/opt/gpuform/vllm-venv"))
PHASES = ["job_queued", "start_requested", "process_started", "process_up", "vllm_launch", "vllm_ready",
          "runtime_ready", "ready", "first_job", "first_token"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gpuform(directory: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), *args], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"gpuform {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def admin(directory: Path, url: str) -> httpx.Client:
    key = (directory / "state" / "secrets" / "gateway.main.admin_key").read_text()
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def live_workers(directory: Path, url: str, endpoint: str) -> list[dict[str, Any]]:
    with admin(directory, url) as http:
        workers = http.get(f"/admin/endpoints/{endpoint}/status").json()["worker_list"]
    return [w for w in workers if w["state"] in ("initializing", "idle", "running")]


def wait_zero(directory: Path, url: str, endpoint: str) -> None:
    deadline = time.monotonic() + 120
    while live_workers(directory, url, endpoint):
        if time.monotonic() > deadline:
            raise SystemExit("workers did not scale to zero")
        time.sleep(0.5)


def stream_first_token(url: str, model: str) -> tuple[float, float]:
    """(time the request was sent, seconds to the first streamed token)."""
    body = {"model": model, "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    sent = time.time()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=600) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:") and '"content"' in line:
                return sent, time.time() - sent
    raise SystemExit("no token streamed")


def vllm_bench(runs: int) -> dict[str, Any]:
    if not (VENV / "bin" / "python").exists():
        raise SystemExit(f"no vLLM virtualenv at {VENV}: run .ci/setup/vllm.sh (or pass --skip-vllm)")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        subprocess.run([str(VENV / "bin" / "python"), str(REPO / "tools/vllm/tiny_model.py"),
                        str(directory / "model")], check=True, capture_output=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        (directory / "gpuform.yaml").write_text(textwrap.dedent(f"""
            pools: {{here: {{provider: local, price_per_gpu_second: {{cpu: 0.00002}}}}}}
            volumes: {{tiny: {{pool: here, path: {directory / 'staged'}, source: ./model}}}}
            gateway:
              main: {{pool: here, listen: 127.0.0.1:{port}, api_keys: {{bench: {KEY}}}, log_level: warning}}
            endpoints:
              tiny:
                pool: here
                worker: {{template: vllm, python: {VENV}, env: {{MAX_MODEL_LEN: 512, ENFORCE_EAGER: true}},
                          ready_timeout: 5m}}
                model: {{name: tiny, volume: tiny}}
                scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 2s}}
            """))
        gpuform(directory, "apply", "--auto-approve")
        rows = []
        try:
            for _ in range(runs):
                wait_zero(directory, url, "tiny")
                sent, ttft = stream_first_token(url, "tiny")
                (worker,) = live_workers(directory, url, "tiny")
                _, warm = stream_first_token(url, "tiny")
                rows.append({"client_sent": sent, "client_ttft": ttft, "warm_ttft": warm, **worker["timeline"]})
        finally:
            gpuform(directory, "destroy", "--auto-approve")
    return {"runs": rows}


def report_vllm(result: dict[str, Any]) -> dict[str, float]:
    rows = result["runs"]
    print("(1) vLLM cold start on the CPU (tiny Llama, local provider); seconds after the request was sent")
    print("    " + "".join(f"{p:>13s}" for p in [*PHASES, "client TTFT"]))
    for row in rows:
        base = row["client_sent"]
        cells = [row.get(p, float("nan")) - base for p in PHASES] + [row["client_ttft"]]
        print("    " + "".join(f"{c:13.3f}" for c in cells))
    init = [r["vllm_ready"] - r["vllm_launch"] for r in rows]
    total = [r["client_ttft"] for r in rows]
    share = [t - i for t, i in zip(total, init, strict=True)]
    before = [r["vllm_launch"] - r["client_sent"] for r in rows]
    after = [r["client_ttft"] - (r["vllm_ready"] - r["client_sent"]) for r in rows]
    warm = [r["warm_ttft"] for r in rows]
    summary = {"cold_ttft_s": statistics.median(total), "vllm_init_s": statistics.median(init),
               "platform_share_s": statistics.median(share), "before_vllm_launch_s": statistics.median(before),
               "after_vllm_ready_s": statistics.median(after), "warm_ttft_s": statistics.median(warm)}
    print(f"    median: cold TTFT {summary['cold_ttft_s']:.3f} s = vLLM's own init {summary['vllm_init_s']:.3f} s "
          f"+ platform {summary['platform_share_s']:.3f} s")
    print(f"      platform = request -> vLLM launched {summary['before_vllm_launch_s']:.3f} s "
          f"+ vLLM ready -> first token at the client {summary['after_vllm_ready_s']:.3f} s "
          f"(a warm request's TTFT is {summary['warm_ttft_s']:.3f} s)")
    ok = summary["platform_share_s"] <= 0.5
    print(f"    platform share {summary['platform_share_s']:.3f} s, target <= 0.5 s: ratio "
          f"{summary['platform_share_s'] / 0.5:.2f} ({'ok' if ok else 'MISSED'})")
    return summary


def docker_bench(runs: int, base_image: str) -> dict[str, Any]:
    results: dict[str, list[float]] = {"fresh": [], "restart": []}
    for keep in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            (directory / "gpuform.yaml").write_text(textwrap.dedent(f"""
                pools:
                  box: {{provider: docker, hosts: [{{address: localhost, docker_host: "unix:///var/run/docker.sock"}}],
                        base_image: {base_image}, price_per_gpu_second: {{cpu: 0.00001}}}}
                gateway:
                  main: {{pool: box, listen: 127.0.0.1:{port}, api_keys: {{bench: {KEY}}}, log_level: warning,
                         timings: {{reconcile_interval: 0.2s}}}}
                endpoints:
                  echo:
                    pool: box
                    worker: {{template: echo, keep_stopped: {str(keep).lower()}}}
                    scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 2s}}
                """))
            gpuform(directory, "apply", "--auto-approve")
            try:
                for i in range(runs + (1 if keep else 0)):
                    wait_zero(directory, url, "echo")
                    body = httpx.post(f"{url}/v2/echo/runsync", json={"input": i}, timeout=300,
                                      headers={"Authorization": f"Bearer {KEY}"}).json()
                    if keep and i == 0:
                        continue  # the first start creates the container that is kept afterwards
                    results["restart" if keep else "fresh"].append(body["delayTime"] / 1000)
            finally:
                gpuform(directory, "destroy", "--auto-approve")
    return results


def report_docker(result: dict[str, list[float]]) -> dict[str, float]:
    fresh, restart = statistics.median(result["fresh"]), statistics.median(result["restart"])
    print("(2) docker (this machine's dockerd): request delay including the worker's start, median of "
          f"{len(result['fresh'])}")
    print(f"    fresh container {fresh:.3f} s; kept container restarted {restart:.3f} s; ratio {restart / fresh:.2f}")
    return {"fresh_container_s": fresh, "restarted_container_s": restart}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--base-image", default="gpuform-test/base:bookworm")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "when": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                      time.gmtime())}
    if not args.skip_vllm:
        raw = vllm_bench(args.runs)
        out["vllm"] = {"summary": report_vllm(raw), "runs": raw["runs"]}
    if not args.skip_docker:
        raw_docker = docker_bench(args.runs, args.base_image)
        out["docker"] = {"summary": report_docker(raw_docker), "runs": raw_docker}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cold_start.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
