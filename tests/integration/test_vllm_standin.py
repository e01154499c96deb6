"""The vLLM worker against a stand-in server (tests/fixtures/fake_vllm.py) through the local provider:
readiness, the OpenAI routes, sleep mode (sleep instead of stop, wake on demand), and a server that fails to
start being reported with its log lines and backed off."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO
from tests.helpers import KEY, Deployment, wait_for

pytestmark = pytest.mark.integration


def _endpoint(extra_env: str = "", worker_extra: str = "", idle: str = "2s") -> str:
    command = json.dumps([sys.executable, str(REPO / "tests/fixtures/fake_vllm.py")])
    return f"""
endpoints:
  llm:
    pool: here
    worker:
      template: vllm
      env: {{GPUFORM_VLLM_COMMAND: '{command}', MAX_MODEL_LEN: 512{extra_env}}}
      {worker_extra}
    model: {{name: tiny, volume: weights}}
    scaling: {{min_workers: 0, max_workers: 1, idle_timeout: {idle}}}
"""


def _volume(workdir: Path) -> str:
    (workdir / "model").mkdir(exist_ok=True)
    (workdir / "model" / "config.json").write_text("{}")
    return f"volumes:\n  weights: {{pool: here, path: {workdir.parent / 'staged'}, source: ./model}}\n"


def test_sleep_mode_sleeps_idle_workers_and_wakes_them_on_demand(deployment: Deployment, tmp_path: Path) -> None:
    log = tmp_path / "fake.log"
    deployment.apply(_endpoint(f", FAKE_VLLM_LOG: {log}", "sleep_mode: true"), extra=_volume(deployment.workdir))
    client = openai.OpenAI(base_url=f"{deployment.url}/v1", api_key=KEY, max_retries=0)
    first = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
    assert first.choices[0].message.content == "fake answer"
    worker = deployment.workers("llm")[0]
    assert {"process_up", "vllm_launch", "vllm_ready", "first_token"} <= set(worker["timeline"])
    asleep = wait_for(lambda: [w for w in deployment.status("llm")["worker_list"] if w["state"] == "sleeping"], 30,
                      what="the idle worker to be put to sleep")
    assert asleep[0]["id"] == worker["id"]
    wait_for(lambda: log.exists() and "sleep" in log.read_text(), 10, what="vLLM's /sleep to be called")
    started = time.monotonic()
    again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "y"}])
    assert again.choices[0].message.content == "fake answer" and time.monotonic() - started < 5
    assert "wake" in log.read_text()
    assert [w["id"] for w in deployment.workers("llm")] == [worker["id"]], "woken, not cold-started"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "z"}], stream=True))
    assert streamed == "fakeanswer"


def test_a_server_that_fails_to_start_is_unhealthy_with_its_log(deployment: Deployment) -> None:
    deployment.apply(_endpoint(", FAKE_VLLM_FAIL: 'CUDA out of memory while loading weights'"),
                     extra=_volume(deployment.workdir))
    with deployment.http() as http:
        http.post("/v2/llm/run", json={"input": {"prompt": "x"}})
        health = deployment.wait_unhealthy(http, "llm")
    assert "CUDA out of memory while loading weights" in health["condition"]["log_tail"]
    assert "vLLM exited with code 1" in health["condition"]["log_tail"]
    deployment.assert_backs_off("llm", 3, "backed off, not restarted in a loop")
