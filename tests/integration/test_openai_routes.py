"""OpenAI-compatible routes, tested with the official openai package (echo worker answers OpenAI-shaped)."""

from __future__ import annotations

import time

import openai
import pytest

from tests.helpers import KEY, Deployment

pytestmark = pytest.mark.integration

ENDPOINTS = """
endpoints:
  chat:
    pool: here
    worker: {template: echo}
    model: {name: tiny-chat}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
  other:
    pool: here
    worker: {template: echo}
    model: {name: other-model}
    scaling: {min_workers: 0, max_workers: 1}
"""


def test_openai_client_against_an_endpoint_and_the_model_router(deployment: Deployment) -> None:
    deployment.apply(ENDPOINTS)
    client = openai.OpenAI(base_url=f"{deployment.url}/v2/chat/openai/v1", api_key=KEY, max_retries=0)
    chat = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hello there"}])
    assert chat.choices[0].message.content == "hello there" and chat.object == "chat.completion"

    chunks = list(client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "one two three"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three"
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "stop"], "the last chunk says why it ended"

    completion = client.completions.create(model="tiny-chat", prompt="say this")
    assert completion.choices[0].text == "say this"

    started = time.monotonic()
    models = [m.id for m in openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=KEY).models.list()]
    assert sorted(models) == ["other-model", "tiny-chat"]
    assert time.monotonic() - started < 2 and not deployment.workers("other"), "models must not wake a worker"

    routed = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=KEY, max_retries=0)
    answer = routed.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "routed"}])
    assert answer.choices[0].message.content == "routed"
    with pytest.raises(openai.NotFoundError, match="no endpoint serves model 'missing'"):
        routed.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{deployment.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_streaming_is_passed_through_without_buffering(deployment: Deployment, tmp_path) -> None:  # type: ignore[no-untyped-def]
    handler = tmp_path / "slow_stream.py"
    handler.write_text(
        "import json, time\nfrom gpuform.worker import start\n"
        "def handler(job):\n"
        "    def gen():\n"
        "        for i in range(3):\n"
        "            yield 'data: ' + json.dumps({'choices': [{'index': 0, 'delta': {'content': str(i)}}]}) + '\\n\\n'\n"
        "            time.sleep(1.0)\n"
        "        yield 'data: [DONE]\\n\\n'\n"
        "    return gen()\n"
        "start(handler)\n")
    deployment.apply(f"""
        endpoints:
          slow:
            pool: here
            worker: {{command: [python, {handler}]}}
            model: {{name: slow}}
            scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 60s}}
        """)
    with deployment.http() as http:
        http.post("/v2/slow/runsync", json={"input": {"warm": 1}})  # the worker is up
        started = time.monotonic()
        arrivals = []
        with http.stream("POST", "/v1/chat/completions", json={"model": "slow", "stream": True,
                                                                "messages": [{"role": "user", "content": "x"}]}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    arrivals.append((time.monotonic() - started, line))
    assert arrivals[0][0] < 1.0, f"first chunk arrived after {arrivals[0][0]:.2f}s: buffered"
    assert arrivals[-1][1] == "data: [DONE]" and arrivals[-1][0] > 2.5
