"""LoRA adapters end to end on real vLLM (CPU): a tiny rank-8 adapter for the tiny model, made at test time and
kept in the endpoint's volume beside the model, is declared in LORA_MODULES; /v1/models lists it before any
worker runs; a request naming it as its `model` reaches the vLLM endpoint (not the other endpoint on the
gateway) and vLLM applies it, so its greedy output differs from the base model's. One vLLM start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import REPO
from tests.helpers import KEY, Deployment
from tests.vllm.conftest import VENV, run_tool

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
MODULES = json.dumps([{"name": "pirate", "path": "adapters/pirate"}])


def test_a_lora_adapter_is_listed_routed_by_name_and_applied(deployment: Deployment, tiny_model: Path,
                                                             tmp_path: Path) -> None:
    source = tmp_path / "volume"
    shutil.copytree(tiny_model, source)
    run_tool(REPO / "tools/vllm/tiny_lora.py", source, source / "adapters" / "pirate", "--rank", "8")
    volume = f"volumes:\n  weights: {{pool: here, path: {tmp_path / 'staged'}, source: {source}}}\n"
    deployment.apply(f"""
endpoints:
  tiny:
    pool: here
    worker:
      template: vllm
      python: {VENV}
      env: {{MAX_MODEL_LEN: 512, ENFORCE_EAGER: true, MAX_LORA_RANK: 8, LORA_MODULES: '{MODULES}'}}
      ready_timeout: 5m
    model: {{name: tiny-llama, volume: weights}}
    scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 60s}}
    execution_timeout: 120s
  other:
    pool: here
    worker: {{template: echo}}
    model: {{name: echo-model}}
""", extra=volume)
    with deployment.http() as http:
        listed = http.get("/v1/models").json()["data"]
    assert sorted((m["id"], m["parent"] or "") for m in listed) == [("echo-model", ""), ("pirate", "tiny-llama"),
                                                                   ("tiny-llama", "")]
    assert deployment.workers("tiny") == [], "listing models woke no worker"

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
    assert len(deployment.workers("tiny")) == 1 and deployment.workers("other") == []

    echoed = httpx.post(f"{deployment.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                        json={"model": "echo-model", "messages": [{"role": "user", "content": "to the echo"}]},
                        timeout=60).json()
    assert echoed["choices"][0]["message"]["content"] == "to the echo", "echo-model went to the other endpoint"
