"""What `validate` says about a custom worker's files: its handler, its Python and its requirements."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gpuform.workerspec import handler_file, jobs_per_worker, requirement_lines
from tests.conftest import write_config

pytestmark = pytest.mark.unit

CONFIG = """
pools:
  lab: {provider: local}
  boxes: {provider: docker, hosts: [{address: localhost, docker_host: "unix:///var/run/docker.sock"}]}
gateway: {main: {pool: lab, listen: "127.0.0.1:18080"}}
endpoints:
  app:
    pool: lab
    worker:
      command: [python, handler.py]
"""


def test_a_missing_handler_is_located_at_validate(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_config(tmp_path, CONFIG)
    result = cli("-C", str(tmp_path), "validate")
    assert result.code == 1 and "Traceback" not in result.err
    assert "gpuform.yaml:9:" in result.err and "the handler handler.py does not exist" in result.err, result.err
    (tmp_path / "handler.py").write_text("print('hi')\n")
    assert cli("-C", str(tmp_path), "validate").code == 0


def test_gpuforms_own_environment_is_refused_as_worker_python(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "handler.py").write_text("print('hi')\n")
    write_config(tmp_path, CONFIG + f"      python: {sys.prefix}\n")
    result = cli("-C", str(tmp_path), "validate")
    assert result.code == 1 and "gpuform.yaml:10:" in result.err, result.err
    assert "the environment gpuform itself runs in" in result.err


def test_requirements_on_a_docker_pool_and_pip_options_are_errors(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "handler.py").write_text("print('hi')\n")
    (tmp_path / "requirements.txt").write_text("six\n--index-url http://example.invalid\n")
    write_config(tmp_path, CONFIG + "  boxed:\n    pool: boxes\n    worker: {image: 'x:1', requirements: [six]}\n")
    result = cli("-C", str(tmp_path), "validate")
    assert result.code == 1
    assert "requirements.txt:2: pip options are not supported" in result.err, result.err
    assert "install them in the worker's image" in result.err


def test_handler_file_and_requirement_lines() -> None:
    assert handler_file(["python", "-u", "app/handler.py", "--flag"]) == "app/handler.py"
    assert handler_file(["/venv/bin/python3.11", "h.py"]) == "h.py"
    assert handler_file(["python", "-m", "gpuform.workers.echo"]) is None
    assert handler_file(["./serve"]) is None
    assert requirement_lines("# pinned\nsix==1.16.0  # tiny\n\nrunpod\n") == [(2, "six==1.16.0"), (4, "runpod")]


def test_jobs_per_worker_follows_the_endpoint_else_the_worker() -> None:
    assert jobs_per_worker("custom", 3, {}) == 3
    assert jobs_per_worker("custom", None, {}) == 1
    assert jobs_per_worker("vllm", None, {"MAX_CONCURRENCY": 8}) == 8
    assert jobs_per_worker("vllm", None, {}) == 30


def test_baremetal_refuses_the_gateways_environment_as_worker_python(tmp_path: Path) -> None:
    from gpuform.errors import SSHError
    from gpuform.provider import ProviderContext
    from gpuform.providers.baremetal import BaremetalPool
    from gpuform.providers.baremetal.provider import BaremetalProvider

    pool = BaremetalPool.model_validate({"provider": "baremetal", "hosts": [{"address": "10.0.0.1"}]})
    provider = BaremetalProvider("rack", pool, ProviderContext("0123456789abcdef", tmp_path, tmp_path))
    gateway_env = "/var/lib/gpuform/lineage-01234567/venvs/gateway"
    for python in (gateway_env, f"{gateway_env}/bin/python", f"{gateway_env}/"):
        with pytest.raises(SSHError, match="is the gateway's own environment"):
            provider._refuse_gateway_env("app", python)
    provider._refuse_gateway_env("app", "/opt/vllm-venv")
    provider._refuse_gateway_env("app", None)
