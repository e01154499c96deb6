"""The headline path with real vLLM on the CPU: apply -> a worker starts with the model from a volume -> the
official vLLM OpenAI server answers through the gateway (openai and runpod clients) -> idle -> zero workers
-> the next request cold-starts and is answered. The tiny model is generated at test time.

In the same vLLM start, LoRA adapters end to end: a rank-8 adapter for the tiny model, made at test time and
kept in the endpoint's volume beside the model, is declared in LORA_MODULES; /v1/models lists it before any
worker runs; a request naming it as its `model` reaches the vLLM endpoint (not the other endpoint on the
gateway) and vLLM applies it, so its greedy output differs from the base model's."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest
import runpod

from tests.conftest import REPO
from tests.helpers import KEY, Deployment, wait_for
from tests.vllm.conftest import VENV, run_tool

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _volume_with_adapter(tiny_model: Path, tmp_path: Path) -> Path:
    source = tmp_path / "volume"
    shutil.copytree(tiny_model, source)
    run_tool(REPO / "tools/vllm/tiny_lora.py", source, source / "adapters" / "pirate", "--rank", "8")
    return source


def _models_are_listed_without_a_worker(deployment: Deployment) -> None:
    with deployment.http() as http:
        listed = http.get("/v1/models").json()["data"]
    assert sorted((m["id"], m["parent"] or "") for m in listed) == [("echo-model", ""), ("pirate", "tiny-llama"),
                                                                   ("tiny-llama", "")]
    assert deployment.workers("tiny") == [], "listing models woke no worker"


def _the_adapter_is_routed_by_name_and_applied(deployment: Deployment) -> None:
    client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=KEY, max_retries=0, timeout=300)
    adapted = client.completions.create(model="pirate", prompt="once upon", max_tokens=8, temperature=0)
    assert adapted.model == "pirate", "vLLM answered with the adapter"
    base = client.completions.create(model="tiny-llama", prompt="once upon", max_tokens=8, temperature=0)
    assert base.model == "tiny-llama" and base.choices[0].text != adapted.choices[0].text, "the adapter applied"
    again = client.completions.create(model="pirate", prompt="once upon", max_tokens=8, temperature=0)
    assert again.choices[0].text == adapted.choices[0].text
    chunks = list(client.chat.completions.create(model="pirate", max_tokens=4, stream=True,
                                                 messages=[{"role": "user", "content": "ahoy"}]))
    assert chunks and {c.model for c in chunks} == {"pirate"}
    assert deployment.workers("other") == []
    echoed = httpx.post(f"{deployment.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "echo-model", "messages": [{"role": "user", "content": "to the echo"}]},
                        timeout=60).json()
    assert echoed["choices"][0]["message"]["content"] == "to the echo", "echo-model went to the other endpoint"


def test_vllm_end_to_end_with_lora_and_scale_to_zero(deployment: Deployment, tiny_model: Path,
                                                      tmp_path: Path) -> None:
    source = _volume_with_adapter(tiny_model, tmp_path)
    volume = f"volumes:\n  weights: {{pool: here, path: {tmp_path / 'staged'}, source: {source}}}\n"
    modules = json.dumps([{"name": "pirate", "path": "adapters/pirate"}])
    deployment.apply(f"""
endpoints:
  tiny:
    pool: here
    worker:
      template: vllm
      python: {VENV}
      env: {{MAX_MODEL_LEN: 512, ENFORCE_EAGER: true, MAX_CONCURRENCY: 4, MAX_LORA_RANK: 8,
             LORA_MODULES: '{modules}'}}
      ready_timeout: 5m
    model: {{name: tiny-llama, volume: weights}}
    scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 5s}}
    execution_timeout: 120s
  other:
    pool: here
    worker: {{template: echo}}
    model: {{name: echo-model}}
""", extra=volume)
    _models_are_listed_without_a_worker(deployment)
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
    assert [m.id for m in client.models.list()] == ["tiny-llama", "pirate"]
    _the_adapter_is_routed_by_name_and_applied(deployment)

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
