"""LoRA adapters of vllm endpoints: LORA_MODULES parsed in every form, made into vLLM flags with paths on the
volume, checked at validate (names reach one endpoint) and at plan (the adapter is in the volume), and served
by the gateway (routing by `model`, /v1/models without a worker)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gpuform.errors import ConfigError
from gpuform.workers.vllm import lora
from gpuform.workers.vllm.__main__ import check_adapters, vllm_command
from gpuform.workers.vllm.args import check_env, lora_args
from tests.conftest import write_config
from tests.gateway_harness import Harness, endpoint_spec, scenario

pytestmark = pytest.mark.unit

SQL = '[{"name": "sql", "path": "adapters/sql"}, {"name": "chat", "path": "/runpod-volume/adapters/chat", ' \
      '"base_model_name": "tiny"}]'


def test_lora_modules_in_runpod_json_vllm_json_and_name_path_forms() -> None:
    assert lora.parse(SQL) == ([lora.Adapter("sql", "adapters/sql"), lora.Adapter("chat", "adapters/chat", "tiny")],
                               [])
    assert lora.parse('{"name": "sql", "path": "a/sql/"}') == ([lora.Adapter("sql", "a/sql")], [])
    assert lora.parse(" sql=a/sql  chat=./b/chat ")[0] == [lora.Adapter("sql", "a/sql"), lora.Adapter("chat", "b/chat")]


@pytest.mark.parametrize(("value", "says"), [
    ("[{", "not valid JSON"),
    ('[{"name": "x"}]', 'string "name" and "path"'),
    ('[{"name": "x", "path": "a", "rank": 8}]', "unknown keys rank"),
    ("sql", "not name=path"),
    ("sql=/srv/other/sql", "outside the volume"),
    ("sql=../../etc", "inside the volume"),
    ("sql=a b=a sql=c", 'adapter "sql" is declared twice'),
    ("has space=a", "not name=path"),
    ("-x=a", "must be 1-128 letters"),
])
def test_malformed_lora_modules_say_what_to_write(value: str, says: str) -> None:
    assert any(says in problem for problem in lora.parse(value)[1]), lora.parse(value)


def test_adapters_become_vllm_flags_with_paths_under_the_volume_root() -> None:
    argv, problems = lora_args({"LORA_MODULES": SQL}, "/srv/vol")
    assert not problems
    assert argv[:2] == ["--enable-lora", "--lora-modules"]
    assert [json.loads(item) for item in argv[2:]] == [
        {"name": "sql", "path": "/srv/vol/adapters/sql"},
        {"name": "chat", "path": "/srv/vol/adapters/chat", "base_model_name": "tiny"}]
    assert lora_args({"LORA_MODULES": SQL, "ENABLE_LORA": "true"}, "/v")[0][0] == "--lora-modules"
    off = check_env({"LORA_MODULES": SQL, "ENABLE_LORA": False})
    assert [p.key for p in off] == ["ENABLE_LORA"]


def test_the_worker_resolves_adapters_on_its_volume_and_refuses_a_missing_one(tmp_path: Path) -> None:
    env = {"GPUFORM_MODEL_PATH": f"{tmp_path}/base", "GPUFORM_VOLUME_ROOT": str(tmp_path),
           "GPUFORM_MODEL_NAME": "tiny", "LORA_MODULES": "sql=adapters/sql",
           "GPUFORM_ENDPOINT_ENV_KEYS": "LORA_MODULES", "GPUFORM_VLLM_COMMAND": '["srv"]'}
    argv = vllm_command(env, 9000)
    item = json.dumps({"name": "sql", "path": f"{tmp_path}/adapters/sql"})
    assert argv[-3:] == ["--enable-lora", "--lora-modules", item]
    with pytest.raises(SystemExit, match=r"LoRA adapter 'sql': no adapter_config\.json"):
        check_adapters(argv)
    (tmp_path / "adapters/sql").mkdir(parents=True)
    (tmp_path / "adapters/sql/adapter_config.json").write_text("{}")
    check_adapters(argv)


def test_workers_learn_the_volume_root_that_adapter_paths_start_from() -> None:
    from gpuform.gateway.fleet import _model_env

    inner = _model_env(endpoint_spec(model={"name": "m", "volume": "v", "path": "base/"}, volume_path="/srv/v/base"))
    assert (inner["GPUFORM_MODEL_PATH"], inner["GPUFORM_VOLUME_ROOT"]) == ("/srv/v/base", "/srv/v")
    root = _model_env(endpoint_spec(model={"name": "m", "volume": "v"}, volume_path="/srv/v"))
    assert (root["GPUFORM_MODEL_PATH"], root["GPUFORM_VOLUME_ROOT"]) == ("/srv/v", "/srv/v")


CONFIG = """
pools: {p: {provider: local}}
volumes: {m: {pool: p, path: /tmp/x, source: ./m}}
gateway: {g: {pool: p}}
endpoints:
  llm:
    pool: p
    worker: {template: vllm, env: {LORA_MODULES: "sql=adapters/sql"}}
    model: {name: tiny, volume: m}
  other:
    pool: p
    worker: {template: vllm, env: {LORA_MODULES: "%s"}}
    model: {name: small, volume: m}
"""


@pytest.mark.parametrize(("other", "says"), [
    ("sql=adapters/sql2", 'LoRA adapter "sql" of endpoint other is also a LoRA adapter of endpoint llm '
                          "(declared at {dir}/gpuform.yaml:7:"),
    ("tiny=adapters/t", 'LoRA adapter "tiny" of endpoint other is also its model of endpoint llm '
                        "(declared at {dir}/gpuform.yaml:8:"),
    ("small=adapters/t", 'LoRA adapter "small" of endpoint other is also its model of this endpoint'),
])
def test_a_name_served_by_two_endpoints_is_a_located_error(tmp_path: Path, other: str, says: str) -> None:
    from gpuform.config.load import load

    write_config(tmp_path, CONFIG % other)
    (tmp_path / "m").mkdir()  # the volume's source (validate checks it exists)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    (diag,) = info.value.diagnostics
    assert says.format(dir=tmp_path) in diag.summary
    assert diag.source is not None and (diag.source.line, diag.address) == (11, "endpoint.other")


def test_adapters_without_a_volume_are_a_located_error(tmp_path: Path) -> None:
    from gpuform.config.load import load

    write_config(tmp_path, (CONFIG % "x=a").replace("model: {name: small, volume: m}", "model: {name: small}"))
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    assert [d.summary for d in info.value.diagnostics] == [
        "endpoint other declares LoRA adapters but its model has no volume"]


def test_plan_refuses_an_adapter_missing_from_the_volume_with_its_location(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG % "chat=adapters/chat")
    (tmp_path / "m/adapters/sql").mkdir(parents=True)
    (tmp_path / "m/adapters/sql/adapter_config.json").write_text("{}")
    (tmp_path / "m/adapters/sql/adapter_model.safetensors").write_bytes(b"x")
    (tmp_path / "m/adapters/chat").mkdir()
    (tmp_path / "m/adapters/chat/adapter_config.json").write_text("{}")
    result = cli("-C", str(tmp_path), "plan")
    assert result.code == 1
    assert (f"{tmp_path}/gpuform.yaml:11:50: error: LoRA adapter \"chat\": adapters/chat/ in volume \"m\" has no "
            "adapter_model.safetensors or adapter_model.bin") in result.err
    assert "sql" not in result.err and "Traceback" not in result.err


def test_plan_refuses_an_adapter_whose_rank_is_above_max_lora_rank(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG % "chat=adapters/chat")
    for name, rank in (("sql", 8), ("chat", 32)):
        (tmp_path / f"m/adapters/{name}").mkdir(parents=True)
        (tmp_path / f"m/adapters/{name}/adapter_config.json").write_text(json.dumps({"r": rank}))
        (tmp_path / f"m/adapters/{name}/adapter_model.safetensors").write_bytes(b"x")
    result = cli("-C", str(tmp_path), "plan")
    assert result.code == 1
    assert (f'{tmp_path}/gpuform.yaml:11:50: error: LoRA adapter "chat" has rank 32, above MAX_LORA_RANK (16)'
            in result.err)
    assert "Set MAX_LORA_RANK to 32 or more" in result.err and '"sql"' not in result.err


def _lora_spec(name: str, model: str, modules: str) -> Any:
    return endpoint_spec(worker={"template": "vllm", "env": {"LORA_MODULES": modules}},
                         model={"name": model, "volume": "m"}, volume_path="/srv/m")


def test_the_gateway_lists_adapters_without_a_worker_and_routes_them_to_their_endpoint() -> None:
    endpoints = {"a": _lora_spec("a", "tiny", SQL), "b": endpoint_spec(model={"name": "other"})}

    async def body(h: Harness) -> None:
        listed = (await h.call("GET", "/v1/models")).json()["data"]
        assert [(m["id"], m["owned_by"], m["parent"]) for m in listed] == [
            ("tiny", "gpuform:a", None), ("sql", "gpuform:a", "tiny"), ("chat", "gpuform:a", "tiny"),
            ("other", "gpuform:b", None)]
        assert [m["id"] for m in (await h.call("GET", "/v2/a/openai/v1/models")).json()["data"]] == \
            ["tiny", "sql", "chat"]
        assert h.calls("start_worker") == [], "listing models woke no worker"
        asking = asyncio.create_task(h.call("POST", "/v1/chat/completions", json={"model": "chat", "messages": []}))
        for _ in range(200):
            await asyncio.sleep(0.01)
            await h.settle()
            if h.world.launches:
                break
        worker = h.worker()
        assert worker.endpoint == "a"
        job = None
        while job is None:
            job = await worker.take()
        assert job["input"]["openai_input"]["model"] == "chat"
        await worker.done(job["id"], {"model": "chat"})
        assert (await asking).json() == {"model": "chat"}
        unknown = await h.call("POST", "/v1/completions", json={"model": "nope"})
        assert unknown.status_code == 404 and "served models: chat, other, sql, tiny" in unknown.json()["error"]["message"]

    scenario(body, endpoints=endpoints)
