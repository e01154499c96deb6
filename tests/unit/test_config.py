"""Configuration loading: every bad input gets a located error with a fix, all in one run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpuform.config.load import load
from gpuform.config.types import format_duration, parse_duration, parse_size
from gpuform.errors import ConfigError
from tests.conftest import write_config

pytestmark = pytest.mark.unit

VALID = """
variables: {port: 8080}
pools:
  lab: {provider: local, price_per_gpu_second: {cpu: 0.00001}}
volumes:
  weights: {pool: lab, path: /srv/models/x, source: ./models}
policies:
  office: {schedule: [{cron: "0 8 * * 1-5", duration: 10h, min_workers: 2}]}
gateway:
  main: {pool: lab, listen: "127.0.0.1:${var.port}", api_keys: {app: "${env.TEST_KEY}"}}
endpoints:
  chat:
    pool: lab
    worker: {template: vllm, env: {MAX_MODEL_LEN: 4096, HF_TOKEN: "${env.TEST_HF}"}}
    model: {name: tiny, volume: weights}
    scaling: {min_workers: 0, max_workers: 2, idle_timeout: 60s}
    policy: office
"""
ENV = {"TEST_KEY": "secret-key", "TEST_HF": "hf_x"}


@pytest.fixture(autouse=True)
def _volume_source(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()  # VALID's volume source must exist on this machine


def errors_of(directory: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(directory, env=ENV if env is None else env)
    return [d.render() for d in info.value.diagnostics if d.severity == "error"]


def test_valid_config_loads_with_runpod_defaults_and_interpolation(tmp_path: Path) -> None:
    write_config(tmp_path, VALID)
    cfg = load(tmp_path, env=ENV)
    ep = cfg.endpoints["chat"]
    assert ep.execution_timeout == 600 and ep.ttl == 86400
    assert ep.scaling.idle_timeout == 60 and ep.scaling.scaler == "queue_delay" and ep.scaling.scaler_value == 4
    assert cfg.gateways["main"].listen == "127.0.0.1:8080"
    assert cfg.gateways["main"].api_keys == {"app": "secret-key"}
    assert ("endpoints", "chat", "worker", "env", "HF_TOKEN") in cfg.sensitive
    assert ("gateway", "main", "listen") not in cfg.sensitive


def test_defaults_match_runpod_when_omitted(tmp_path: Path) -> None:
    write_config(tmp_path, """
        pools: {p: {provider: local}}
        gateway: {g: {pool: p}}
        endpoints: {e: {pool: p}}
    """)
    ep = load(tmp_path, env={}).endpoints["e"]
    assert (ep.scaling.min_workers, ep.scaling.max_workers, ep.scaling.idle_timeout) == (0, 3, 5)
    assert (ep.scaling.scaler, ep.scaling.scaler_value, ep.execution_timeout, ep.ttl) == ("queue_delay", 4, 600, 86400)
    assert ep.gpu.count == 1


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    write_config(tmp_path, "pools:\n  lab: {provider: local\nendpoints: [\n")
    (err,) = errors_of(tmp_path)
    assert re.match(r".*gpuform\.yaml:\d+:\d+: error: YAML syntax error", err)


def test_duplicate_keys_are_errors_not_overwrites(tmp_path: Path) -> None:
    write_config(tmp_path, """
        pools:
          lab: {provider: local}
        gateway:
          main: {pool: lab, pool: lab}
    """)
    (err,) = errors_of(tmp_path)
    assert 'gpuform.yaml:4:21: error: duplicate key "pool"' in err
    assert "already defined at" in err and "gpuform.yaml:4:10" in err


def test_unknown_field_suggests_the_right_one(tmp_path: Path) -> None:
    write_config(tmp_path, VALID.replace("idle_timeout: 60s", "idle_timeot: 60s"))
    (err,) = errors_of(tmp_path)
    assert 'gpuform.yaml:15:47: error: unknown field "idle_timeot"' in err
    assert 'Did you mean "idle_timeout"?' in err


def test_wrong_types_and_bad_durations_are_located(tmp_path: Path) -> None:
    write_config(tmp_path, VALID.replace("max_workers: 2", "max_workers: lots").replace("60s", "6 0 seconds"))
    errs = errors_of(tmp_path)
    assert any("15:44: error: scaling.max_workers: Input should be a valid integer" in e for e in errs)
    assert any("scaling.idle_timeout" in e and "is not a duration" in e for e in errs)


def test_unknown_references_name_the_declared_ones(tmp_path: Path) -> None:
    write_config(tmp_path, VALID.replace("pool: lab\n    worker", "pool: lap\n    worker").replace(
        "policy: office", "policy: ofice"))
    errs = errors_of(tmp_path)
    assert any('gpuform.yaml:12:11: error: pool "lap" refers to no pool' in e and 'Did you mean "lab"' in e
               for e in errs)
    assert any('policy "ofice" refers to no policy' in e for e in errs)


def test_min_workers_above_max_workers_is_impossible(tmp_path: Path) -> None:
    write_config(tmp_path, VALID.replace("min_workers: 0, max_workers: 2", "min_workers: 5, max_workers: 2"))
    (err,) = errors_of(tmp_path)
    assert "min_workers (5) is greater than max_workers (2)" in err
    assert "gpuform.yaml:15:" in err


def test_dependency_cycles_are_reported_with_the_path(tmp_path: Path) -> None:
    write_config(tmp_path, VALID.replace("api_keys: {app: ", "depends_on: [endpoint.chat], api_keys: {app: "))
    (err,) = errors_of(tmp_path)
    assert "dependency cycle: endpoint.chat -> gateway.main -> endpoint.chat" in err


def test_missing_env_and_unknown_var_are_located(tmp_path: Path) -> None:
    write_config(tmp_path, VALID.replace("${var.port}", "${var.prt}"))
    errs = errors_of(tmp_path, env={"TEST_KEY": "x"})
    assert any("error: environment variable TEST_HF is not set" in e and "export TEST_HF" in e for e in errs)
    assert any('error: unknown variable "prt"' in e and 'Did you mean "port"' in e for e in errs)
    assert len(errs) == 2, errs  # no follow-on error about the empty substituted value


def test_all_errors_are_reported_in_one_run(tmp_path: Path) -> None:
    write_config(tmp_path, """
        pools:
          lab: {provider: locl}
          other: {provider: local, price_per_gpu_secnd: {}}
        gateway:
          main: {pool: nope}
        endpoints:
          a: {pool: other, scaling: {max_workers: -1}}
          B: {pool: other}
        unknown_section: {}
    """)
    errs = errors_of(tmp_path)
    joined = "\n".join(errs)
    for needle in ['unknown provider "locl"', 'unknown field "price_per_gpu_secnd"', 'pool "nope" refers to no pool',
                   "scaling.max_workers", 'invalid name "B"', 'unknown section "unknown_section"']:
        assert needle in joined, needle
    assert all(re.match(r"\S+:\d+:\d+: error: ", e) for e in errs), errs


def test_resources_merge_across_files_and_duplicates_are_located(tmp_path: Path) -> None:
    write_config(tmp_path, "pools: {lab: {provider: local}}\ngateway: {g: {pool: lab}}\n", "a.yaml")
    write_config(tmp_path, "endpoints: {e: {pool: lab}}\npools: {lab: {provider: local}}\n", "b.yaml")
    (err,) = errors_of(tmp_path)
    assert "b.yaml:2:9: error: pools.lab is defined twice" in err and "a.yaml:1:9" in err


def test_variables_from_cli_and_environment_override_defaults(tmp_path: Path) -> None:
    write_config(tmp_path, VALID)
    cfg = load(tmp_path, {"port": "9001"}, env={**ENV, "GPUFORM_VAR_port": "9000"})
    assert cfg.gateways["main"].listen == "127.0.0.1:9001"
    cfg = load(tmp_path, env={**ENV, "GPUFORM_VAR_port": "9000"})
    assert cfg.gateways["main"].listen == "127.0.0.1:9000"


def test_volume_on_another_pool_than_the_endpoint_is_refused(tmp_path: Path) -> None:
    write_config(tmp_path, VALID.replace("pools:\n", "pools:\n  far: {provider: local}\n").replace(
        "weights: {pool: lab", "weights: {pool: far"))
    (err,) = errors_of(tmp_path)
    assert 'volume "weights" is staged on pool "far", but the endpoint runs on pool "lab"' in err


def test_empty_directory_says_what_to_create(tmp_path: Path) -> None:
    (err,) = errors_of(tmp_path)
    assert "no *.yaml file" in err and "examples/quickstart" in err


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (7, 7)])
def test_durations_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_sizes_and_duration_formatting() -> None:
    assert parse_size("10MB") == 10_000_000 and parse_size("1KiB") == 1024
    assert format_duration(5400) == "1h30m" and format_duration(0.25) == "250ms"


def test_errors_behind_a_bad_field_are_reported_in_the_same_run(tmp_path: Path) -> None:
    """A misspelt field must not hide the resource's other mistakes (one validate, every error)."""
    write_config(tmp_path, """
        pools: {p: {provider: local}}
        gateway: {g: {pool: p}}
        endpoints:
          e:
            pool: nopool
            scaling: {min_workers: 5, max_workers: 2, idle_timout: 60s}
    """)
    found = "\n".join(errors_of(tmp_path))
    assert 'unknown field "idle_timout"' in found
    assert "min_workers (5) is greater than max_workers (2)" in found
    assert 'pool "nopool" refers to no pool' in found
    assert found.count("idle_timout") == 1, "nothing is reported twice"


def test_import_blocks_name_configured_resources_by_address_and_name(tmp_path: Path) -> None:
    write_config(tmp_path, VALID)
    write_config(tmp_path, "import:\n  endpoint.chat: chat\n  gateway.main: main\n", "imports.yaml")
    assert load(tmp_path, env=ENV).imports == {"endpoint.chat": "chat", "gateway.main": "main"}
    write_config(tmp_path, "import:\n  endpoint.nope: nope\n  chat: chat\n  endpoint.chat: other\n",
                 "imports.yaml")
    errors = errors_of(tmp_path)
    assert any("imports.yaml:2" in e and "endpoint.nope is not in the configuration" in e for e in errors)
    assert any("imports.yaml:3" in e and '"chat" is not a resource address' in e for e in errors)
    assert any("imports.yaml:4" in e and "ID 'other' does not match endpoint.chat" in e for e in errors)
