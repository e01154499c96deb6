"""Mangled configurations never crash validate or plan: each gets a located error (or is valid)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuform.cli.main import EXIT_BUG, main

pytestmark = pytest.mark.unit

VALID = """variables: {port: 8080, key: k}
pools:
  lab:
    provider: local
    price_per_gpu_second: {H100-80GB: 0.001, cpu: 0.00001}
volumes:
  weights: {pool: lab, path: /srv/m, source: ./models}
policies:
  office:
    schedule:
      - {cron: "0 8 * * 1-5", duration: 10h, min_workers: 1}
gateway:
  main:
    pool: lab
    listen: "127.0.0.1:${var.port}"
    api_keys: {app: "${var.key}"}
    timings: {lease_timeout: 10s}
endpoints:
  chat:
    pool: lab
    worker: {template: vllm, env: {MAX_MODEL_LEN: 4096}}
    model: {name: tiny, volume: weights}
    gpu: {types: [H100-80GB, cpu], count: 1}
    scaling: {min_workers: 0, max_workers: 3, idle_timeout: 60s, scaler: request_count, scaler_value: 2}
    policy: office
    depends_on: [volume.weights]
"""
LOCATED = re.compile(r"^\S+\.yaml:\d+:\d+: error: ", re.MULTILINE)
NOISE = ["{", "}", "[", "]", ":", ": ", "-", "- ", "\t", "  ", "'", '"', "${", "${env.NOPE}", "${var.x}", "&a", "*a",
         "<<: *a", "!!binary", "null", "~", "1e400", "-1", "yes", "0x1F", "\n", "\n  ", "é", "\x00", "%", "@", "`"]
VALUES = ["-5", "1e9", "[]", "{}", "null", "true", '"x"', "3.5", "[1, 2]", "{a: 1}", "99999999999999999999", "''",
          ".inf", "-.inf", ".nan", "false", "1.0e+400", "&r [*r]", "-0", "0"]
BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'lol'}]\n" for i in range(9))


@st.composite
def mangled(draw: st.DrawFn) -> str:
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "dup_line", "swap_lines", "value", "indent", "bomb"]))
        lines = text.split("\n")
        if kind == "delete":
            start = draw(st.integers(0, len(text) - 1))
            text = text[:start] + text[start + draw(st.integers(1, 12)):]
        elif kind == "insert":
            pos = draw(st.integers(0, len(text)))
            text = text[:pos] + draw(st.sampled_from(NOISE)) + text[pos:]
        elif kind == "dup_line":
            i = draw(st.integers(0, len(lines) - 1))
            text = "\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])
        elif kind == "swap_lines":
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == "value":
            spots = [m.end() for m in re.finditer(r": ", text)]
            pos = draw(st.sampled_from(spots))
            end = min([i for i in (text.find(c, pos) for c in ",}\n") if i != -1] or [len(text)])
            text = text[:pos] + draw(st.sampled_from(VALUES)) + text[end:]
        elif kind == "bomb":  # a "billion laughs" document: bounded, never expanded
            text = BOMB + text
        else:
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = " " * draw(st.integers(0, 5)) + lines[i].lstrip()
            text = "\n".join(lines)
    return text


def _run(directory: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-C", str(directory), "--state-dir", str(directory / "state"), *args])
    return code, capsys.readouterr().err


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mangled())
def test_mangled_configs_get_located_errors_never_a_crash(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "models").mkdir()
        (directory / "gpuform.yaml").write_bytes(text.encode("utf-8", errors="surrogatepass"))
        for args in (("validate",), ("plan", "--no-refresh")):
            code, err = _run(directory, *args, capsys=capsys)
            assert code != EXIT_BUG, f"last-resort handler fired for {args}:\n{err}\n--- config ---\n{text}"
            assert code in (0, 1), (code, err)
            if code == 1:
                assert LOCATED.search(err), f"error without a location for {args}:\n{err}\n--- config ---\n{text}"
            assert "Traceback" not in err


def test_the_unmangled_config_is_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "gpuform.yaml").write_text(VALID)
    assert _run(tmp_path, "validate", capsys=capsys)[0] == 0
