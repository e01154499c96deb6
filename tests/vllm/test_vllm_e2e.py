"""The headline path with real vLLM on the CPU: apply -> a worker starts with the model from a volume -> the
official vLLM OpenAI server answers through the gateway (openai and runpod clients) -> idle -> zero workers
-> the next request cold-starts and is answered. The tiny model is generated at test time."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import runpod

from tests.helpers import KEY, Deployment, wait_for
from tests.vllm.conftest import VENV

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_end_to_end_with_scale_to_zero(deployment: Deployment, tiny_model: Path) -> None:
    volume = f"volumes:\n  weights: {{pool: here, path: {deployment.workdir.parent / 'staged'}, source: {tiny_model}}}\n"
    deployment.apply(f"""
endpoints:
  tiny:
    pool: here
    worker:
      template: vllm
      python: {VENV}
      env: {{MAX_MODEL_LEN: 512, ENFORCE_EAGER: true, MAX_CONCURRENCY: 4}}
      ready_timeout: 5m
    model: {{name: tiny-llama, volume: weights}}
    scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 5s}}
    execution_timeout: 120s
""", extra=volume)
    client = openai.OpenAI(base_url=f"{deployment.url}/v2/tiny/openai/v1", api_key=KEY, max_retries=0, timeout=300)
    chat = client.chat.completions.create(model="tiny-llama", max_tokens=8,
                                          messages=[{"role": "user", "content": "hello"}])
    assert chat.object == "chat.completion" and chat.usage is not None and chat.usage.completion_tokens > 0
    first_worker = deployment.workers("tiny")[0]
    phases = first_worker["timeline"]
    assert {"start_requested", "process_up", "vllm_launch", "vllm_ready", "first_job", "first_token"} <= set(phases)

    chunks = list(client.chat.completions.create(model="tiny-llama", max_tokens=6, stream=True,
                                                 messages=[{"role": "user", "content": "stream"}]))
    assert len(chunks) >= 2 and chunks[0].object == "chat.completion.chunk"
    completion = client.completions.create(model="tiny-llama", prompt="once upon", max_tokens=5)
    assert completion.choices[0].finish_reason in ("length", "stop")
    assert [m.id for m in client.models.list()] == ["tiny-llama"]

    runpod.api_key, runpod.endpoint_url_base = KEY, f"{deployment.url}/v2"
    endpoint = runpod.Endpoint("tiny")
    job = endpoint.run({"input": {"prompt": "hi", "sampling_params": {"max_tokens": 4}}})
    result = job.output(timeout=120)
    assert job.status() == "COMPLETED" and result["object"] == "text_completion"
    sync = endpoint.run_sync({"input": {"messages": [{"role": "user", "content": "x"}],
                                        "sampling_params": {"max_tokens": 4}}}, timeout=120)
    assert sync["object"] == "chat.completion"

    wait_for(lambda: not deployment.workers("tiny"), 60, what="scale to zero after the idle timeout")
    started = time.monotonic()
    again = client.chat.completions.create(model="tiny-llama", max_tokens=4,
                                           messages=[{"role": "user", "content": "again"}])
    assert again.choices and time.monotonic() - started > 3, "the answer needed a cold start"
    assert deployment.workers("tiny")[0]["id"] != first_worker["id"]
    status = deployment.status("tiny")
    assert status["metrics"]["cold_start"]["count"] == 2
