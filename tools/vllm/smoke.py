#!/usr/bin/env python3
"""Start the vLLM OpenAI server on a (tiny) model and exercise it; print timings.

    python smoke.py [--model DIR] [--port N] [--sleep] [--json OUT] [-- EXTRA VLLM ARGS]

Run with the vLLM worker's venv python (.ci/setup/vllm.sh); it uses httpx.
If --model is not given, a tiny random Llama is written to a temp dir with
tiny_model.py (removed afterwards). The server listens on 127.0.0.1 only and is stopped at the end
(SIGTERM to the server, then SIGKILL to its own process group).

Checks: /health ready time, GET /v1/models, POST /v1/completions,
POST /v1/chat/completions, both with "stream": true (SSE, ends with [DONE]).
With --sleep: VLLM_SERVER_DEV_MODE=1 and the /sleep, /is_sleeping, /wake_up
dev endpoints (without --enable-sleep-mode, which the CPU platform refuses).

Defaults for CPU (overridable from the environment; KEY= with an empty value
unsets it): VLLM_CPU_KVCACHE_SPACE=1 (GiB), HF_HUB_OFFLINE=1; flags
--enforce-eager --max-model-len 512.
Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
CPU_FLAGS = ["--enforce-eager", "--max-model-len", "512"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_model(path: Path | None) -> Path:
    if path is not None and (path / "config.json").is_file():
        return path
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="gpuform-tiny-llama-"))
    sys.path.insert(0, str(HERE))
    import tiny_model  # noqa: PLC0415

    tiny_model.main([str(path)])
    return path


class Server:
    def __init__(self, model: Path, port: int, extra: list[str], env: dict, log: Path):
        self.cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            *CPU_FLAGS, *extra,
        ]
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.returncode: int | str | None = None

    def start(self) -> None:
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self.logf, stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop it and its children
        )

    def stop(self) -> float:
        """SIGTERM the API server (it shuts its engine/worker children down);
        SIGKILL what is left of its process group after 20 s."""
        t0 = time.monotonic()
        if self.proc:
            pgid = self.proc.pid  # start_new_session: the group id is its pid
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.returncode = self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.returncode = "timeout"
            try:
                os.killpg(pgid, signal.SIGKILL)  # stragglers, if any
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.logf.close()
        return time.monotonic() - t0


def tree_rss_mib(pid: int) -> float | None:
    """RSS of the server and all its children (API server, engine core, worker)."""
    try:
        import psutil  # a vLLM dependency
    except ImportError:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return round(sum(p.memory_info().rss for p in procs) / 2**20, 1)
    except psutil.Error:
        return None


def wait_ready(client: httpx.Client, server: Server, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}; see {server.log}")
        try:
            if client.get("/health", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not ready after {timeout}s; see {server.log}")


def timed(fn, n: int):
    times, last = [], None
    for _ in range(n):
        t0 = time.monotonic()
        last = fn()
        times.append(time.monotonic() - t0)
    return last, {"n": n, "median_s": round(statistics.median(times), 4),
                  "min_s": round(min(times), 4), "max_s": round(max(times), 4)}


def sse(client: httpx.Client, path: str, body: dict) -> dict:
    """POST a streaming request; return chunk count, TTFB, total time, [DONE] seen."""
    t0 = time.monotonic()
    first = None
    chunks, done, text = 0, False, []
    with client.stream("POST", path, json=body) as r:
        r.raise_for_status()
        ctype = r.headers.get("content-type", "")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if first is None:
                first = time.monotonic() - t0
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                continue
            obj = json.loads(data)
            chunks += 1
            for ch in obj.get("choices", []):
                text.append(ch.get("text") or (ch.get("delta") or {}).get("content") or "")
    return {"content_type": ctype, "chunks": chunks, "done": done,
            "ttfb_s": round(first or 0, 4), "total_s": round(time.monotonic() - t0, 4),
            "text": "".join(text)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--sleep", action="store_true", help="also test dev sleep endpoints")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--ready-timeout", type=float, default=300)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--log", type=Path, help="server log (default: temp file)")
    ap.add_argument("extra", nargs="*", help="extra vLLM flags (after --)")
    args = ap.parse_args(argv)

    model = ensure_model(args.model)
    made_model = args.model is None  # temp dir: removed at the end
    port = args.port or free_port()
    env = dict(os.environ)
    for k, v in CPU_ENV_DEFAULTS.items():
        if k not in env:
            env[k] = v
        elif env[k] == "":  # KEY= (empty) means: leave it unset (vLLM's int('') fails)
            del env[k]
    if args.sleep:
        env["VLLM_SERVER_DEV_MODE"] = "1"
    log = args.log or Path(tempfile.mkstemp(prefix="vllm-smoke-", suffix=".log")[1])
    server = Server(model, port, args.extra, env, log)
    res: dict = {"model": str(model), "cmd": server.cmd, "log": str(log),
                 "env": {k: env[k] for k in (*CPU_ENV_DEFAULTS, "VLLM_SERVER_DEV_MODE") if k in env}}
    ok = True

    def check(name: str, cond: bool) -> None:
        nonlocal ok
        res.setdefault("checks", {})[name] = bool(cond)
        ok = ok and bool(cond)

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    server.start()
    try:
        res["ready_s"] = round(wait_ready(client, server, args.ready_timeout), 2)
        res["rss_mib_after_ready"] = tree_rss_mib(server.proc.pid)

        r, res["models"] = timed(lambda: client.get("/v1/models"), args.repeat)
        models = r.json()
        name = models["data"][0]["id"]
        check("models", models["object"] == "list" and name == str(model))
        res["version"] = client.get("/version").json().get("version")

        comp_body = {"model": name, "prompt": "Hello, world", "max_tokens": 16, "temperature": 0}
        r, res["completions"] = timed(lambda: client.post("/v1/completions", json=comp_body), args.repeat)
        body = r.json()
        check("completions", r.status_code == 200
              and body["usage"]["completion_tokens"] == 16 and body["choices"][0]["finish_reason"] == "length")
        res["completions"]["text"] = body["choices"][0]["text"]

        chat_body = {"model": name, "max_tokens": 16,
                     "messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hi there, how are you?"}]}
        r, res["chat"] = timed(lambda: client.post("/v1/chat/completions", json=chat_body), args.repeat)
        body = r.json()
        check("chat", r.status_code == 200 and body["object"] == "chat.completion"
              and body["choices"][0]["message"]["role"] == "assistant")
        res["chat"]["prompt_tokens"] = body["usage"]["prompt_tokens"]

        s = sse(client, "/v1/completions", {**comp_body, "stream": True})
        check("completions_stream", s["done"] and s["chunks"] >= 2
              and s["content_type"].startswith("text/event-stream"))
        res["completions_stream"] = s
        s = sse(client, "/v1/chat/completions",
                {**chat_body, "stream": True, "stream_options": {"include_usage": True}})
        check("chat_stream", s["done"] and s["chunks"] >= 2)
        res["chat_stream"] = s

        # longer generation: decode throughput on this machine
        long_body = {**comp_body, "max_tokens": 256, "ignore_eos": True}
        t0 = time.monotonic()
        r = client.post("/v1/completions", json=long_body)
        dt = time.monotonic() - t0
        n = r.json()["usage"]["completion_tokens"]
        res["long_completion"] = {"tokens": n, "s": round(dt, 3), "tok_per_s": round(n / dt, 1)}
        res["rss_mib_after_requests"] = tree_rss_mib(server.proc.pid)

        if args.sleep:
            sl: dict = {}
            sl["is_sleeping_before"] = client.get("/is_sleeping").json()
            r = client.post("/sleep", params={"level": 1})
            sl["sleep"] = [r.status_code, r.json()]
            sl["is_sleeping_after"] = client.get("/is_sleeping").json()
            sl["health_while_sleeping"] = client.get("/health").status_code
            try:
                client.post("/v1/completions", json=comp_body, timeout=3)
                sl["request_while_sleeping"] = "answered"
            except httpx.TimeoutException:
                sl["request_while_sleeping"] = "blocked (timed out after 3 s)"
            t0 = time.monotonic()
            r = client.post("/wake_up")
            sl["wake_up"] = [r.status_code, r.json(), round(time.monotonic() - t0, 4)]
            sl["is_sleeping_woken"] = client.get("/is_sleeping").json()
            r = client.post("/v1/completions", json=comp_body)
            sl["request_after_wake"] = r.status_code
            check("sleep_roundtrip", sl["is_sleeping_after"] == {"is_sleeping": True}
                  and sl["is_sleeping_woken"] == {"is_sleeping": False} and r.status_code == 200)
            res["sleep"] = sl
    except Exception as e:  # report, then stop the server
        res["error"] = f"{type(e).__name__}: {e}"
        ok = False
    finally:
        client.close()
        res["stop_s"] = round(server.stop(), 2)
        res["server_exit_code_after_sigterm"] = server.returncode

    if made_model:
        shutil.rmtree(model, ignore_errors=True)
    res["ok"] = ok
    out = json.dumps(res, indent=2, ensure_ascii=True)
    print(out)
    if args.json:
        args.json.write_text(out + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
