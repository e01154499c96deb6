"""The vLLM worker: ``python -m gpuform.workers.vllm``.

Starts the official vLLM OpenAI server on loopback with the model from the mounted volume, waits for its
health check, and only then takes jobs (proxied by :mod:`.handler`). Start-up phases are reported to the
gateway for the cold-start timeline: ``process_up`` → ``vllm_launch`` → ``vllm_ready`` → ``runtime_ready``.
If vLLM exits during start-up, the worker exits too (its log holds vLLM's output); the gateway reports the
last lines and backs off instead of restarting it in a loop.
"""

from __future__ import annotations

import time

STARTED = time.time()

import json  # noqa: E402  (imports kept light until vLLM is launched: its start-up is the long pole)
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from gpuform.util.phase import report_phase_now  # noqa: E402
from gpuform.workers.vllm.args import build_args, lora_args  # noqa: E402
from gpuform.workerspec import VLLM_CONCURRENCY  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vllm_command(env: dict[str, str], port: int) -> list[str]:
    """The server's argv: base command, loopback address, model from the volume, then the mapped flags."""
    endpoint_env = {k: env[k] for k in env.get("GPUFORM_ENDPOINT_ENV_KEYS", "").split(",") if k in env}
    flags, problems = build_args(endpoint_env)
    adapters, more = lora_args(endpoint_env, _volume_root(env))
    problems += more
    for problem in problems:
        print(f"gpuform vllm worker: {problem.severity}: {problem.message}", flush=True)
    if any(p.severity == "error" for p in problems):
        raise SystemExit("gpuform vllm worker: refusing to start vLLM with invalid flags (see above)")
    base = json.loads(env["GPUFORM_VLLM_COMMAND"]) if env.get("GPUFORM_VLLM_COMMAND") else \
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    argv = [*base, "--host", "127.0.0.1", "--port", str(port)]
    if "MODEL_NAME" not in endpoint_env:
        model = env.get("GPUFORM_MODEL_PATH")
        if not model:
            raise SystemExit("gpuform vllm worker: no model path (declare `model: {volume: ...}` on the endpoint)")
        argv += ["--model", model]
    if "OPENAI_SERVED_MODEL_NAME_OVERRIDE" not in endpoint_env and env.get("GPUFORM_MODEL_NAME"):
        argv += ["--served-model-name", env["GPUFORM_MODEL_NAME"]]
    return argv + flags + adapters


def _volume_root(env: dict[str, str]) -> str:
    """Where the endpoint's volume is seen from this process; LoRA adapter paths are relative to it."""
    return env.get("GPUFORM_VOLUME_ROOT") or env.get("GPUFORM_MODEL_PATH") or "/runpod-volume"


def check_adapters(argv: list[str]) -> None:
    """Exit with a clear message when an adapter directory is missing (vLLM would fail later, less clearly)."""
    if "--lora-modules" not in argv:
        return
    for item in argv[argv.index("--lora-modules") + 1:]:
        if item.startswith("--"):
            break
        adapter = json.loads(item)
        if not os.path.isfile(os.path.join(adapter["path"], "adapter_config.json")):
            raise SystemExit(f"gpuform vllm worker: LoRA adapter {adapter['name']!r}: no adapter_config.json in "
                             f"{adapter['path']}; put the adapter on the endpoint's volume or fix LORA_MODULES")


def server_env(env: dict[str, str]) -> dict[str, str]:
    out = {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_SERVER_DEV_MODE": "1"}
    if not env.get("CUDA_VISIBLE_DEVICES"):
        out.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # CPU placement: vLLM otherwise asks for most of RAM
    return out


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise SystemExit(f"gpuform vllm worker: vLLM exited with code {code} during start-up (see above)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"gpuform vllm worker: vLLM was not healthy after {timeout:g}s (VLLM_STARTUP_TIMEOUT)")


def main() -> None:
    env = dict(os.environ)
    port = int(env.get("VLLM_PORT") or _free_port())
    argv = vllm_command(env, port)
    check_adapters(argv)
    launched = time.time()
    proc = subprocess.Popen(argv, env=server_env(env))
    print("gpuform vllm worker: started " + " ".join(argv), flush=True)
    report_phase_now("process_up", STARTED)
    report_phase_now("vllm_launch", launched)
    def forward(signum: int, frame: object) -> None:
        proc.send_signal(signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, forward)
    try:
        wait_ready(proc, port, float(env.get("VLLM_STARTUP_TIMEOUT", "1200")))
        from gpuform.worker import start
        from gpuform.workers.vllm.handler import VLLMProxy

        report_phase_now("vllm_ready")
        proxy = VLLMProxy(f"http://127.0.0.1:{port}", env.get("GPUFORM_MODEL_NAME") or "model",
                          float(env.get("REQUEST_TIMEOUT", "3600")))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        start(proxy.handle, concurrency=int(env.get("MAX_CONCURRENCY", VLLM_CONCURRENCY)), control=proxy.control)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
