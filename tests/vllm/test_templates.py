"""The embeddings and pytorch templates on the CPU, in the vLLM virtualenv (it has torch and transformers), with
tiny models generated at test time: answers through the gateway match what the model computes in-process
(expected.json, written by the generators), over the OpenAI route (openai client, base64 and float) and the
RunPod routes; malformed requests are 400s or BadInput failures with a message, not crashed workers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO
from tests.helpers import KEY, Deployment
from tests.vllm.conftest import VENV, run_tools

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _close(got: list[float], want: list[float], tol: float = 1e-4) -> bool:
    return len(got) == len(want) and all(math.isclose(a, b, abs_tol=tol) for a, b in zip(got, want, strict=True))


def _endpoints(tmp_path: Path) -> tuple[str, str]:
    tools = REPO / "tools" / "workers"
    run_tools([(tools / "tiny_embedder.py", tmp_path / "embedder"), (tools / "tiny_torch.py", tmp_path / "mlp"),
               (tools / "tiny_torch.py", tmp_path / "mlp", "--export")])
    volumes = f"""
volumes:
  embedder: {{pool: here, path: {tmp_path / 'staged-embedder'}, source: {tmp_path / 'embedder'}}}
  mlp: {{pool: here, path: {tmp_path / 'staged-mlp'}, source: {tmp_path / 'mlp'}}}
"""
    endpoints = f"""
endpoints:
  embed:
    pool: here
    worker: {{template: embeddings, python: {VENV}, env: {{MAX_BATCH_SIZE: 8}}}}
    model: {{name: tiny-embed, volume: embedder}}
    scaling: {{max_workers: 1, idle_timeout: 60s}}
  mlp:
    pool: here
    depends_on: [endpoint.embed]   # one at a time: each installs gpuform into the same worker.python
    worker: {{template: pytorch, python: {VENV}, env: {{MODEL_FILE: model.pt}}}}
    model: {{name: tiny-mlp, volume: mlp}}
    scaling: {{max_workers: 1, idle_timeout: 60s}}
  mlp-export:
    pool: here
    depends_on: [endpoint.mlp]
    worker: {{template: pytorch, python: {VENV}}}
    model: {{name: tiny-mlp-export, volume: mlp}}
    scaling: {{max_workers: 1, idle_timeout: 60s}}
"""
    return endpoints, volumes


def test_embeddings_and_pytorch_templates_answer_what_their_models_compute(deployment: Deployment,
                                                                         tmp_path: Path) -> None:
    endpoints, volumes = _endpoints(tmp_path)
    deployment.apply(endpoints, extra=volumes)
    expected = json.loads((tmp_path / "embedder" / "expected.json").read_text())
    client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=KEY, max_retries=0, timeout=120)

    packed = client.embeddings.create(model="tiny-embed", input=expected["texts"])  # base64 on the wire
    assert [len(d.embedding) for d in packed.data] == [32, 32, 32] and packed.model == "tiny-embed"
    assert all(_close(d.embedding, want) for d, want in zip(packed.data, expected["embeddings"], strict=True))
    assert packed.usage.prompt_tokens == expected["tokens"]
    floats = client.embeddings.create(model="tiny-embed", input=expected["texts"][0], encoding_format="float",
                                      dimensions=8)
    cut = expected["embeddings"][0][:8]
    norm = math.sqrt(sum(x * x for x in cut))
    assert _close(floats.data[0].embedding, [x / norm for x in cut])
    with pytest.raises(openai.BadRequestError, match="must hold 1 to 8 items"):
        client.embeddings.create(model="tiny-embed", input=["x"] * 9)
    with pytest.raises(openai.BadRequestError, match="serves embeddings"):
        client.chat.completions.create(model="tiny-embed", messages=[{"role": "user", "content": "hi"}])

    with deployment.http(timeout=120) as http:
        runpod_style = http.post("/v2/embed/runsync", json={"input": {"input": expected["texts"][1]}}).json()
        assert runpod_style["status"] == "COMPLETED"
        assert _close(runpod_style["output"]["data"][0]["embedding"], expected["embeddings"][1])

        mlp = json.loads((tmp_path / "mlp" / "expected.json").read_text())
        for endpoint in ("mlp", "mlp-export"):
            answer = http.post(f"/v2/{endpoint}/runsync", json={"input": {"inputs": mlp["inputs"]}}).json()
            assert answer["status"] == "COMPLETED", answer
            assert all(_close(g, w, 1e-5) for g, w in zip(answer["output"]["outputs"], mlp["outputs"], strict=True))
        for endpoint in ("mlp", "mlp-export"):
            wrong = http.post(f"/v2/{endpoint}/runsync", json={"input": {"inputs": [[1.0, 2.0, 3.0]]}}).json()
            assert wrong["status"] == "FAILED" and wrong["error"]["error_type"] == "BadInput", wrong
            assert "the model refused the input" in wrong["error"]["error_message"]
        malformed = http.post("/v2/mlp/runsync", json={"input": {"tensor": [1]}}).json()
        assert malformed["status"] == "FAILED" and '"inputs"' in malformed["error"]["error_message"]
        assert http.post("/v2/mlp/runsync", json={"input": {"inputs": [[0.0] * 4]}}).json()["status"] == "COMPLETED"
    assert [len(deployment.workers(e)) for e in ("embed", "mlp", "mlp-export")] == [1, 1, 1], "no worker crashed"
