"""The CLI: exit codes, JSON outputs, state surgery, and no tracebacks for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gpuform.state.model import ResourceState, State
from gpuform.state.store import LocalStateStore
from tests.conftest import REPO, write_config

pytestmark = pytest.mark.unit

CONFIG = """
pools: {lab: {provider: local}}
gateway: {main: {pool: lab, listen: "127.0.0.1:18080", api_keys: {app: "${env.HOME}"}}}
endpoints: {chat: {pool: lab}}
"""


def _seed_state(directory: Path) -> State:
    store = LocalStateStore(directory / "state")
    state = State()
    state.resources["pool.lab"] = ResourceState("pool.lab", "pool", "lab", "local", {"provider": "local"})
    state.resources["gateway.main"] = ResourceState(
        "gateway.main", "gateway", "main", "local",
        {"pool": "lab", "advertise_url": "http://127.0.0.1:18080", "api_keys": {"app": "sensitive:hmac-sha256:ab"}},
        computed={"pid": 1})
    state.resources["endpoint.chat"] = ResourceState("endpoint.chat", "endpoint", "chat", "local",
                                                     {"pool": "lab", "gateway": "main"})
    store.write(state)
    return store.read()


def test_validate_json_reports_diagnostics_with_ranges(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG.replace("pool: lab}}\n", "pool: lob}}\n"))
    result = cli("-C", str(tmp_path), "validate", "--json")
    assert result.code == 1
    data = json.loads(result.out)
    assert data["valid"] is False and data["error_count"] == 1
    assert data["diagnostics"][0]["range"]["start"] == {"line": 3, "column": 26}


def test_validate_success_and_every_example_validates(cli, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GPUFORM_API_KEY", "example-key")
    monkeypatch.setenv("HF_TOKEN", "hf-example")
    monkeypatch.setenv("GATEWAY_DB_URL", "postgresql://gw:example@db.lab:5432/gpuform")  # examples/ha
    examples = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
    assert examples
    for found in examples:
        example = found
        generated = _generated_sources(found)  # models made by tools/ (gitignored): validate says so until they exist
        if generated:
            example = Path(shutil.copytree(found, tmp_path / found.name, ignore=shutil.ignore_patterns("state")))
            missing = cli("-C", str(example), "validate")
            assert missing.code == 1 and f'error: volume source "{generated[0]}" does not exist' in missing.err \
                and "Put the model files there" in missing.err, missing.err
            for source in generated:
                (example / source).mkdir(parents=True, exist_ok=True)
        result = cli("-C", str(example), "validate")
        assert result.code == 0, f"{example.name}:\n{result.err}"
        assert "The configuration is valid" in result.out


def _generated_sources(example: Path) -> list[str]:
    """The volume sources an example names that are not in the repository (its model is generated)."""
    volumes = yaml.safe_load((example / "gpuform.yaml").read_text()).get("volumes") or {}
    sources = [v["source"] for v in volumes.values() if isinstance(v, dict) and v.get("source")]
    return [s for s in sources if not (example / s).exists()]


def test_bad_usage_and_missing_directory_are_clear(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = cli("-C", str(tmp_path / "nope"), "plan")
    assert missing.code == 1 and "does not exist" in missing.err and "Traceback" not in missing.err
    bad_var = cli("--var", "novalue", "validate")
    assert bad_var.code == 1 and "NAME=VALUE" in bad_var.err, "a usage error is 1, never 2 (changes)"
    assert cli("frobnicate").code == 1


def test_schema_describes_every_field(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("schema")
    schema = json.loads(result.out)
    assert set(schema["properties"]) == {"gpuform", "backend", "variables", "pools", "volumes", "policies",
                                          "gateway", "endpoints", "import"}
    undescribed = []
    for name, definition in schema["$defs"].items():
        for field, spec in (definition.get("properties") or {}).items():
            if "description" not in spec:
                undescribed.append(f"{name}.{field}")
    assert not undescribed, undescribed


def test_state_list_show_mv_rm_pull_push(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    state = _seed_state(tmp_path)
    d = str(tmp_path)
    assert cli("-C", d, "state", "list").out.split() == ["endpoint.chat", "gateway.main", "pool.lab"]
    shown = cli("-C", d, "state", "show", "gateway.main").out
    assert "(sensitive value)" in shown and "pid = 1" in shown and "hmac" not in shown
    assert cli("-C", d, "state", "mv", "endpoint.chat", "endpoint.talk").code == 0
    assert cli("-C", d, "state", "mv", "endpoint.talk", "pool.x").code == 1
    assert cli("-C", d, "state", "rm", "endpoint.talk").code == 0
    assert cli("-C", d, "state", "rm", "endpoint.talk").code == 1
    pulled = json.loads(cli("-C", d, "state", "pull").out)
    assert pulled["lineage"] == state.lineage and pulled["serial"] == state.serial + 2
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**pulled, "serial": 1}))
    refused = cli("-C", d, "state", "push", str(old))
    assert refused.code == 1 and "older than" in refused.err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**pulled, "lineage": "different"}))
    assert "different states" in cli("-C", d, "state", "push", str(other)).err
    assert cli("-C", d, "state", "push", str(other), "--force").code == 0


def test_output_json_has_gateway_and_endpoint_urls(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    _seed_state(tmp_path)
    data = json.loads(cli("-C", str(tmp_path), "output", "--json").out)
    endpoints = {"chat": {"url": "http://127.0.0.1:18080/v2/chat",
                          "openai_base_url": "http://127.0.0.1:18080/v2/chat/openai/v1"}}
    assert data == {"gateway_url": {"value": "http://127.0.0.1:18080", "type": "string", "sensitive": False},
                    "endpoints": {"value": endpoints, "type": "object", "sensitive": False}}
    assert cli("-C", str(tmp_path), "output", "-raw", "gateway_url").out == "http://127.0.0.1:18080"
    assert json.loads(cli("-C", str(tmp_path), "output", "-json", "endpoints").out) == endpoints
    assert 'endpoints.chat.url = "http://127.0.0.1:18080/v2/chat"' in cli("-C", str(tmp_path), "output").out
    missing = cli("-C", str(tmp_path), "output", "nope")
    assert missing.code == 1 and 'no output named "nope"' in missing.err


def test_plan_without_refresh_json_and_markdown(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    result = cli("-C", str(tmp_path), "plan", "--no-refresh", "--json", "--detailed-exitcode")
    assert result.code == 2
    data = json.loads(result.out)
    assert {c["address"]: c["change"]["actions"] for c in data["resource_changes"]} == {
        "endpoint.chat": ["create"], "gateway.main": ["create"], "pool.lab": ["create"]}
    assert "/root" not in result.out  # ${env.HOME} is sensitive
    md = cli("-C", str(tmp_path), "plan", "--no-refresh", "--markdown").out
    assert "| `gateway.main` | + create | new |" in md
    plain = cli("-C", str(tmp_path), "plan", "--no-refresh", "--no-color")  # Terraform users type it here
    assert plain.code == 0 and "\x1b[" not in plain.out


def test_force_unlock_with_an_unknown_id_is_an_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    result = cli("-C", str(tmp_path), "force-unlock", "abc")
    assert result.code == 1 and "no lock with ID abc" in result.err


def test_required_version_refuses_a_gpuform_outside_the_range(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from gpuform import __version__

    write_config(tmp_path, CONFIG + 'gpuform: {required_version: ">=99.0"}\n')
    refused = cli("-C", str(tmp_path), "validate")
    assert refused.code == 1 and "Traceback" not in refused.err
    assert f"requires gpuform >=99.0; this is gpuform {__version__}" in refused.err
    assert "gpuform.yaml:4" in refused.err, refused.err
    plan = cli("-C", str(tmp_path), "plan", "-refresh=false")
    assert plan.code == 1 and "requires gpuform >=99.0" in plan.err, "plan refuses it as well"

    write_config(tmp_path, CONFIG + f'gpuform: {{required_version: ">={__version__}, <99"}}\n')
    assert cli("-C", str(tmp_path), "validate").code == 0

    write_config(tmp_path, CONFIG + 'gpuform: {required_version: "newest please"}\n')
    malformed = cli("-C", str(tmp_path), "validate")
    assert malformed.code == 1 and "not a version constraint" in malformed.err


# What Terraform's JSON output format documents for a plan (docs: internals/json-format, "Plan Representation"),
# less terraform_version (ours: gpuform_version) and what has no counterpart here (checks, relevant_attributes).
TERRAFORM_PLAN_KEYS = {"format_version", "variables", "planned_values", "resource_changes", "resource_drift",
                       "output_changes", "prior_state", "configuration", "timestamp", "applyable", "complete",
                       "errored"}
TERRAFORM_CHANGE_KEYS = {"actions", "before", "after", "after_unknown", "before_sensitive", "after_sensitive",
                         "replace_paths"}
# Terraform writes change.importing only for an import block (here: tests/integration/test_import_blocks.py) and
# previous_address only for a moved block, which gpuform has not: an object's name is its identity (an
# endpoint's URL), so a rename is a new object.


def test_plan_json_has_the_fields_of_terraforms_plan_format(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import datetime

    write_config(tmp_path, CONFIG + "variables: {replicas: 3}\n")
    data = json.loads(cli("-C", str(tmp_path), "plan", "-refresh=false", "-json").out)
    assert set(data) >= TERRAFORM_PLAN_KEYS, TERRAFORM_PLAN_KEYS - set(data)
    assert datetime.datetime.fromisoformat(data["timestamp"]).tzinfo is not None
    assert data["variables"] == {"replicas": {"value": 3}}
    for change in data["resource_changes"]:
        assert {"address", "mode", "type", "name", "provider_name", "change"} <= set(change)
        assert set(change["change"]) >= TERRAFORM_CHANGE_KEYS, change["address"]
        assert change["change"]["after_unknown"] == {"computed": True}, "a new resource's computed values are unknown"
        assert "importing" not in change["change"] and "previous_address" not in change
    planned = {r["address"]: r for r in data["planned_values"]["root_module"]["resources"]}
    assert set(planned) == {"pool.lab", "gateway.main", "endpoint.chat"}
    assert planned["gateway.main"]["values"]["advertise_url"] == "http://127.0.0.1:18080"
    assert planned["gateway.main"]["sensitive_values"] == {"api_keys": {"app": True}}
    configured = {r["address"]: r for r in data["configuration"]["root_module"]["resources"]}
    assert configured["endpoint.chat"]["expressions"]["pool"] == {"constant_value": "lab"}
    outputs = data["output_changes"]
    assert outputs["gateway_url"]["actions"] == ["create"]
    assert outputs["gateway_url"]["after"] == "http://127.0.0.1:18080"
    assert outputs["endpoints"]["after"]["chat"]["url"] == "http://127.0.0.1:18080/v2/chat"
    assert "/root" not in json.dumps(data), "sensitive values stay hashed"
