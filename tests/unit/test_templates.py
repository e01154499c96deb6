"""The catalogue of worker templates (`gpuform templates`) and the pure parts of the embeddings and pytorch
workers: the request forms they take, what they answer, and how they refuse malformed input. (Their models run
in tests/vllm/test_templates.py, in the vLLM virtualenv that has torch and transformers.)"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import struct
import typing
from pathlib import Path
from typing import Any

import pytest

from gpuform.config import schema
from gpuform.errors import ConfigError
from gpuform.worker import JobError
from gpuform.workers.embeddings.handler import EmbeddingsHandler
from gpuform.workers.pytorch.handler import Call, TorchHandler, parse
from gpuform.workerspec import TEMPLATES, template_argv
from tests.conftest import REPO, write_config
from tests.gateway_harness import Harness, endpoint_spec, scenario

pytestmark = pytest.mark.unit


def test_every_template_is_accepted_by_the_schema_runs_a_module_and_has_its_examples() -> None:
    assert set(typing.get_args(schema.WorkerSpec.model_fields["template"].annotation)) == set(TEMPLATES)
    for template in TEMPLATES.values():
        if template.module:
            assert importlib.util.find_spec(template.module) is not None, template.module
            assert template_argv(template.name, None) == ["python", "-m", template.module]
        for example in template.examples:
            text = (REPO / "examples" / example / "gpuform.yaml").read_text()
            assert f"template: {template.name}" in text or template.name == "echo", example


def test_gpuform_templates_lists_name_description_and_needs(cli) -> None:  # type: ignore[no-untyped-def]
    listed = cli("templates")
    assert listed.code == 0
    starts = [line.split()[0] for line in listed.out.splitlines() if line and not line.startswith(" ")]
    assert starts[:5] == ["custom", "echo", "vllm", "embeddings", "pytorch"]
    assert "examples/embeddings" in listed.out and "torch and transformers" in listed.out
    data = json.loads(cli("templates", "--json").out)["templates"]
    by_name = {t["name"]: t for t in data}
    assert by_name["pytorch"]["packages"] == ["torch"] and by_name["embeddings"]["needs_volume"] is True


@pytest.mark.parametrize("template", ["embeddings", "pytorch"])
def test_a_model_template_without_a_volume_is_a_located_error(tmp_path: Path, template: str) -> None:
    from gpuform.config.load import load

    write_config(tmp_path, f"""
pools: {{p: {{provider: local}}}}
gateway: {{g: {{pool: p}}}}
endpoints:
  e:
    pool: p
    worker: {{template: {template}}}
    model: {{name: m}}
""")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    (diag,) = info.value.diagnostics
    assert f"the {template} template loads its model from a volume" in diag.summary
    assert diag.source is not None and diag.source.line == 5


def test_a_torch_template_on_a_docker_pool_needs_an_image_with_torch(tmp_path: Path) -> None:
    from gpuform.config.load import load

    write_config(tmp_path, """
pools: {d: {provider: docker, hosts: [{address: 127.0.0.1}]}}
volumes: {v: {pool: d, path: /srv/v, source: ./v}}
gateway: {g: {pool: d}}
endpoints:
  e: {pool: d, worker: {template: pytorch}, model: {name: m, volume: v}}
""")
    (tmp_path / "v").mkdir()  # the volume's source (validate checks it exists)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    assert [d.summary for d in info.value.diagnostics] == [
        "a pytorch worker on a docker pool needs `image:` with torch and gpuform[worker] installed (see "
        "gpuform/workers/vllm/ for the vLLM images)"]


def _fake_encode(inputs: list[str] | list[list[int]]) -> tuple[list[list[float]], int]:
    """A stand-in model: one vector per input, [index, 1, 2, 3]; one token per character or id."""
    return [[float(i), 1.0, 2.0, 3.0] for i in range(len(inputs))], sum(len(x) for x in inputs)


def test_embeddings_answer_openai_bodies_in_float_base64_and_fewer_dimensions() -> None:
    handler = EmbeddingsHandler(_fake_encode, "tiny-embed", normalize=True, max_inputs=4)
    routed = handler({"input": {"openai_route": "/v1/embeddings", "openai_input": {"input": ["ab", "c"],
                                                                                   "model": "tiny-embed"}}})
    assert routed == {"object": "list", "model": "tiny-embed", "usage": {"prompt_tokens": 3, "total_tokens": 3},
                      "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0, 2.0, 3.0]},
                               {"object": "embedding", "index": 1, "embedding": [1.0, 1.0, 2.0, 3.0]}]}
    packed = handler({"input": {"input": "abc", "encoding_format": "base64"}})["data"][0]["embedding"]
    assert struct.unpack("<4f", base64.b64decode(packed)) == (0.0, 1.0, 2.0, 3.0)
    cut = handler({"input": {"input": [[5, 6]], "dimensions": 2}})["data"][0]["embedding"]
    assert cut == [0.0, 1.0], "cut to 2 dimensions, then normalised"
    models = handler({"input": {"openai_route": "/v1/models", "openai_input": {}}})
    assert models["data"][0]["id"] == "tiny-embed"


@pytest.mark.parametrize(("body", "says"), [
    ({}, 'needs "input"'),
    ({"input": 42}, '"input" must be a string'),
    ({"input": []}, "1 to 4 items"),
    ({"input": ["a"] * 5}, "1 to 4 items"),
    ({"input": "a", "encoding_format": "int8"}, '"encoding_format" must be'),
    ({"input": "a", "dimensions": 0}, '"dimensions" must be'),
    ({"input": [[1, "x"]]}, '"input" must be'),
])
def test_malformed_embedding_requests_answer_400_with_a_message(body: dict[str, Any], says: str) -> None:
    handler = EmbeddingsHandler(_fake_encode, "e", max_inputs=4)
    answer = handler({"input": {"openai_route": "/v1/embeddings", "openai_input": body}})
    assert answer["error"]["code"] == 400 and says in answer["error"]["message"]
    other = handler({"input": {"openai_route": "/v1/chat/completions", "openai_input": {"messages": []}}})
    assert "serves embeddings" in other["error"]["message"]


def test_pytorch_jobs_in_each_form_and_refusals() -> None:
    assert parse({"inputs": [[1, 2.5]]}) == Call([[[1, 2.5]]], {}, "float32")
    assert parse({"args": [[1], [2]], "dtype": "int64"}) == Call([[1], [2]], {}, "int64")
    assert parse({"kwargs": {"x": [1.0]}}) == Call([], {"x": [1.0]}, "float32")
    for bad, says in [({"tensor": 1}, '"inputs"'), ({"inputs": [1], "dtype": "complex"}, '"dtype" must be'),
                      ({"inputs": [["a"]]}, "nested lists of numbers"), ({"inputs": []}, "nested lists")]:
        with pytest.raises(JobError, match=says) as info:
            parse(bad)
        assert info.value.error_type == "BadInput"

    def refuse(call: Call) -> Any:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x3 and 4x16)")

    assert TorchHandler(lambda call: [[sum(call.args[0][0])]])({"input": {"inputs": [[1, 2]]}}) == {"outputs": [[3]]}
    with pytest.raises(JobError, match="the model refused the input: mat1 and mat2"):
        TorchHandler(refuse)({"input": {"inputs": [[1, 2, 3]]}})


def test_an_openai_shaped_handler_failure_keeps_its_status_at_the_gateway() -> None:
    spec = endpoint_spec(model={"name": "tiny-embed"})

    async def body(h: Harness) -> None:
        asking = asyncio.create_task(h.call("POST", "/v1/embeddings", json={"model": "tiny-embed", "input": 42}))
        for _ in range(200):
            await asyncio.sleep(0.01)
            await h.settle()
            if h.world.launches:
                break
        worker = h.worker()
        job = None
        while job is None:
            job = await worker.take()
        error = {"message": '"input" must be a string', "type": "invalid_request_error", "code": 400}
        resp = await h.call("POST", f"/v2/ep/job-done/{worker.id}/{job['id']}", worker.token,
                            json={"error": error})
        assert resp.status_code == 200
        answer = await asking
        assert answer.status_code == 400 and answer.json() == {"error": error}

    scenario(body, endpoints={"ep": spec})
