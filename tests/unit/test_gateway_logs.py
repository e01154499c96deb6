"""The gateway's log settings: ``log_format`` (located errors for a bad value; JSON lines with the job's id)
and ``logs`` rotation (the rotating writer every provider's log pipe uses)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gpuform.config import schema
from gpuform.config.load import load
from gpuform.errors import ConfigError
from gpuform.gateway.jobs import Job
from gpuform.gateway.logs import JsonFormatter, job_fields
from gpuform.resources.desired import current_attributes
from gpuform.util import procs
from gpuform.util.logpipe import RotatingFile
from tests.conftest import write_config

pytestmark = pytest.mark.unit

CONFIG = """
pools: {{p: {{provider: local}}}}
gateway:
  main:
    pool: p
    log_format: {fmt}
    logs: {{max_size: {size}, max_files: 2}}
endpoints: {{e: {{pool: p}}}}
"""


def _errors(tmp_path: Path, fmt: str, size: str) -> list[str]:
    write_config(tmp_path, CONFIG.format(fmt=fmt, size=size))
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    return [d.render() for d in info.value.diagnostics if d.severity == "error"]


def test_log_settings_load_and_bad_values_are_located(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG.format(fmt="json", size="20MB"))
    gateway = load(tmp_path, env={}).gateways["main"]
    assert gateway.log_format == "json" and gateway.logs.max_size == 20_000_000 and gateway.logs.max_files == 2
    errors = _errors(tmp_path, "jsonl", "20MB")
    assert len(errors) == 1 and "gpuform.yaml:5:17" in errors[0] and "log_format" in errors[0]
    assert "'text' or 'json'" in errors[0]
    errors = _errors(tmp_path, "text", "12")
    assert len(errors) == 1 and "gpuform.yaml:6:22" in errors[0] and "logs.max_size" in errors[0]


def test_a_gateway_recorded_before_log_settings_reads_them_at_their_defaults() -> None:
    timings = schema.GatewayTimings().model_dump(mode="json")
    now = current_attributes("gateway", {"timings": timings, "store": {"type": "sqlite"}, "replicas": 1})
    assert now["log_format"] == "text" and now["logs"] == {"max_size": 50_000_000, "max_files": 3}


def test_json_lines_carry_the_job_id_the_client_got() -> None:
    job = Job(id="sync-1234", endpoint="chat", input={"x": 1}, created_at=0.0, execution_timeout=600,
              ttl=86400, worker_id="chat-w1")
    record = logging.LogRecord("gpuform.gateway", logging.INFO, __file__, 1, "job %s ended %s: %s",
                               (job.id, "FAILED", 'bad "input"\nsecond line'), None)
    record.__dict__.update(job_fields(job))
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["job_id"] == "sync-1234" and data["endpoint"] == "chat" and data["worker_id"] == "chat-w1"
    assert data["level"] == "INFO" and data["logger"] == "gpuform.gateway" and data["time"].endswith("Z")
    assert data["message"] == 'job sync-1234 ended FAILED: bad "input"\nsecond line'
    plain = json.loads(JsonFormatter().format(logging.LogRecord("x", logging.WARNING, __file__, 1, "up", (), None)))
    assert set(plain) == {"time", "level", "logger", "message"}


def test_a_log_is_rotated_at_line_ends_and_keeps_max_files(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    target = RotatingFile(log, 1000, 2)
    lines = [f"line {i:04d} ".ljust(99, ".").encode() + b"\n" for i in range(45)]
    target.write(b"".join(lines[:25]))  # one burst bigger than two files
    for line in lines[25:]:
        target.write(line)
    target.close()
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert sizes == {"w.log": 500, "w.log.1": 1000, "w.log.2": 1000}, "the oldest lines were dropped"
    for path in tmp_path.iterdir():
        assert path.read_bytes().endswith(b"\n") and path.read_bytes().startswith(b"line ")
    assert procs.tail(log, 3).splitlines()[-1].startswith("line 0044")
    shown = procs.tail(log, 8).splitlines()  # the current file has 5 lines: the rest come from w.log.1
    assert [s[:9] for s in shown] == [f"line {i:04d}" for i in range(37, 45)]


def test_a_line_longer_than_a_whole_file_is_split(tmp_path: Path) -> None:
    target = RotatingFile(tmp_path / "w.log", 1024, 1)
    target.write(b"x" * 3000)
    target.close()
    assert (tmp_path / "w.log").stat().st_size == 952 and (tmp_path / "w.log.1").stat().st_size == 1024
