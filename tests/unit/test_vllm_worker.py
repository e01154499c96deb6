"""The vLLM worker's pure parts: env → flags against the pinned vLLM's flag table, the server command, and
the job input shapes it accepts."""

from __future__ import annotations

import json

import pytest

from gpuform.errors import ConfigError
from gpuform.worker import JobError
from gpuform.workers.vllm.__main__ import server_env, vllm_command
from gpuform.workers.vllm.args import ALIASES, build_args, table
from gpuform.workers.vllm.handler import VLLMProxy
from tests.conftest import REPO, write_config

pytestmark = pytest.mark.unit


def test_every_alias_names_a_flag_of_the_pinned_vllm() -> None:
    flags = table()
    assert flags.version == json.loads((REPO / "gpuform/workers/vllm/vllm_flags.json").read_text())["vllm_version"]
    for env, option in ALIASES.items():
        assert option in flags.by_option, f"{env} -> {option} is not a flag of vLLM {flags.version}"
        argv, problems = build_args({env: "x"})
        assert argv == [option, "x"] and not problems


def test_flags_values_booleans_and_zero_as_unset() -> None:
    argv, problems = build_args({"MAX_MODEL_LEN": "4096", "ENFORCE_EAGER": "yes", "ENABLE_PREFIX_CACHING": "off",
                                 "MAX_NUM_BATCHED_TOKENS": "0", "MY_APP_SETTING": "not-a-flag", "DTYPE": "bfloat16"})
    assert not problems
    assert argv == ["--dtype", "bfloat16", "--no-enable-prefix-caching", "--enforce-eager",
                    "--max-model-len", "4096"]


def test_removed_unknown_and_invalid_values_are_reported_not_crashing() -> None:
    argv, problems = build_args({"SWAP_SPACE": "4", "ENFORCE_EAGER": "sometimes", "DTYPE": "fp7",
                                 "VLLM_EXTRA_ARGS": "--max-num-seq 8 --seed 3"})
    by_key = {p.key: p for p in problems}
    assert by_key["SWAP_SPACE"].severity == "warning" and "removed" in by_key["SWAP_SPACE"].message
    assert by_key["ENFORCE_EAGER"].severity == "error" and "true or false" in by_key["ENFORCE_EAGER"].message
    assert "not one of auto" in by_key["DTYPE"].message
    assert 'Did you mean "--max-num-seqs"' in by_key["VLLM_EXTRA_ARGS"].message
    assert argv[-4:] == ["--max-num-seq", "8", "--seed", "3"]


def test_plan_time_check_locates_vllm_flag_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gpuform.config.load import load

    (tmp_path / "m").mkdir()
    write_config(tmp_path, """
pools: {p: {provider: local}}
volumes: {m: {pool: p, path: /tmp/x, source: ./m}}
gateway: {g: {pool: p}}
endpoints:
  llm:
    pool: p
    worker: {template: vllm, env: {MAX_MODEL_LEN: 512, ENFORCE_EAGER: maybe}}
    model: {name: tiny, volume: m}
""")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    (diag,) = info.value.diagnostics
    assert diag.source is not None and (diag.source.line, diag.source.col) == (7, 56)
    assert "ENFORCE_EAGER='maybe'" in diag.summary


def test_server_command_uses_the_volume_model_and_the_declared_name() -> None:
    env = {"GPUFORM_MODEL_PATH": "/srv/models/tiny", "GPUFORM_MODEL_NAME": "tiny", "MAX_MODEL_LEN": "512",
           "PATH": "/bin", "GPUFORM_ENDPOINT_ENV_KEYS": "MAX_MODEL_LEN", "GPUFORM_VLLM_COMMAND": '["srv"]'}
    assert vllm_command(env, 9000) == ["srv", "--host", "127.0.0.1", "--port", "9000", "--model",
                                       "/srv/models/tiny", "--served-model-name", "tiny", "--max-model-len", "512"]
    overridden = {**env, "MODEL_NAME": "/other", "GPUFORM_ENDPOINT_ENV_KEYS": "MODEL_NAME"}
    assert "/srv/models/tiny" not in vllm_command(overridden, 9000)
    assert server_env({})["HF_HUB_OFFLINE"] == "1" and server_env({})["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in server_env({"CUDA_VISIBLE_DEVICES": "0"})
    with pytest.raises(SystemExit, match="invalid flags"):
        vllm_command({**env, "ENFORCE_EAGER": "maybe", "GPUFORM_ENDPOINT_ENV_KEYS": "ENFORCE_EAGER"}, 9000)


def test_job_input_shapes() -> None:
    proxy = VLLMProxy("http://127.0.0.1:1", "tiny")
    assert proxy.route_of({"openai_route": "/v1/chat/completions", "openai_input": {"messages": []}}) == (
        "/v1/chat/completions", {"messages": [], "model": "tiny"}, "POST")
    assert proxy.route_of({"openai_route": "/v1/models"}) == ("/v1/models", {}, "GET")
    assert proxy.route_of({"route": "/v1/embeddings", "body": {"input": "x"}})[0] == "/v1/embeddings"
    route, body, _ = proxy.route_of({"prompt": "hi", "sampling_params": {"max_tokens": 5}, "stream": True})
    assert route == "/v1/completions" and body == {"prompt": "hi", "max_tokens": 5, "stream": True, "model": "tiny"}
    assert proxy.route_of({"messages": [{"role": "user", "content": "x"}]})[0] == "/v1/chat/completions"
    with pytest.raises(JobError, match="openai_route"):
        proxy.route_of({"nothing": 1})
