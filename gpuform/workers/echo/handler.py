"""A handler that echoes its input, for the quickstart and tests.

Input knobs: ``sleep`` (seconds before answering), ``fail`` (raise with this message), ``stream`` (yield
that many chunks), ``progress`` (post a progress update first), ``log`` (print that many 100-byte lines,
``echo log line N …``, to the worker's log first: log rotation tests). OpenAI-shaped jobs (``openai_route``)
get an OpenAI-shaped answer that echoes the last message, streamed when asked.

Test hook: ``GPUFORM_ECHO_STARTUP_DELAY`` (seconds, in the worker's ``env:``) holds the worker back that long
before it first contacts the gateway, standing in for a model load: a cold start of a set length (the
simulator's fidelity test uses it).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from gpuform.worker import JobError, progress_update

STARTUP_DELAY_ENV = "GPUFORM_ECHO_STARTUP_DELAY"


def startup_delay() -> float:
    """Seconds to wait before starting, from ``GPUFORM_ECHO_STARTUP_DELAY`` (0 when unset); raises SystemExit
    naming the variable when it is not a number ≥ 0."""
    text = os.environ.get(STARTUP_DELAY_ENV, "").strip()
    try:
        value = float(text) if text else 0.0
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise SystemExit(f"echo worker: {STARTUP_DELAY_ENV}={text!r} is not a number of seconds ≥ 0")
    return value


def handler(job: dict[str, Any]) -> Any:
    payload = job["input"]
    if isinstance(payload, dict) and "openai_route" in payload:
        return _openai(payload["openai_route"], payload.get("openai_input") or {})
    if not isinstance(payload, dict):
        return {"echo": payload}
    if payload.get("progress"):
        progress_update(job, {"step": "started"})
    if payload.get("log"):
        _log_lines(int(payload["log"]))
    if payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    if payload.get("fail"):
        raise JobError(str(payload["fail"]), error_type="EchoFailure")
    if payload.get("stream"):
        return _chunks(int(payload["stream"]), float(payload.get("interval", 0)))
    return {"echo": payload}


def _log_lines(count: int) -> None:
    for i in range(min(count, 1_000_000)):
        print(f"echo log line {i} ".ljust(99, "."), flush=i == count - 1)


def _chunks(count: int, interval: float) -> Iterator[dict[str, int]]:
    for i in range(count):
        if interval:
            time.sleep(interval)
        yield {"chunk": i}


def _openai(route: str, body: dict[str, Any]) -> Any:
    if route.endswith("/models"):
        return {"object": "list", "data": [{"id": body.get("model", "echo"), "object": "model"}]}
    messages = body.get("messages") or [{"content": body.get("prompt", "")}]
    text = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) else str(messages[-1])
    chat = route.endswith("/chat/completions")
    ident, created, model = f"cmpl-{uuid.uuid4().hex[:12]}", int(time.time()), body.get("model", "echo")
    if body.get("stream"):
        return _openai_stream(ident, created, model, text, chat)
    choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                              if chat else {"index": 0, "text": text, "finish_reason": "stop"})
    return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(text.split()),
                      "total_tokens": 2 * len(text.split())}}


def _openai_stream(ident: str, created: int, model: str, text: str, chat: bool) -> Iterator[str]:
    """The text word by word (the pieces join back to exactly ``text``), then a final chunk with
    ``finish_reason: stop``, as OpenAI-compatible servers send."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    for piece, finish in [*((p, None) for p in pieces), ("", "stop")]:
        delta: dict[str, Any] = ({"index": 0, "delta": {"content": piece}, "finish_reason": finish} if chat
                                 else {"index": 0, "text": piece, "finish_reason": finish})
        yield "data: " + json.dumps({"id": ident, "object": kind, "created": created, "model": model,
                                     "choices": [delta]}) + "\n\n"
    yield "data: [DONE]\n\n"
