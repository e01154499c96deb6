"""Volumes with the local provider, for real: files already there are checked and never touched (destroy
included), a missing source stops plan at its line, and an interrupted staging resumes where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_gpuform, write_config

pytestmark = pytest.mark.integration


def _snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _computed(workdir: Path, address: str) -> dict:  # type: ignore[type-arg]
    state = json.loads((workdir / "state" / "gpuform.state.json").read_text())
    return next(r for r in state["resources"] if r["address"] == address)["computed"]


def test_a_volume_already_there_is_checked_never_written_and_kept_by_destroy(workdir: Path, tmp_path: Path) -> None:
    there = tmp_path / "nfs" / "qwen"
    (there / "tok").mkdir(parents=True)
    (there / "model.bin").write_bytes(os.urandom(50_000))
    (there / "tok" / "vocab.json").write_text('{"a": 1}')
    sums = "".join(f"{__import__('hashlib').sha256(p.read_bytes()).hexdigest()}  {p.relative_to(there)}\n"
                   for p in sorted(there.rglob("*")) if p.is_file())
    (workdir / "sums.txt").write_text(sums)
    write_config(workdir, f"""
        pools: {{here: {{provider: local}}}}
        volumes:
          qwen: {{pool: here, path: {there}, manifest: sums.txt}}
          bare: {{pool: here, path: {there}}}
        """)
    before = _snapshot(there)
    applied = run_gpuform("-C", str(workdir), "apply", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode").returncode == 0
    assert _snapshot(there) == before, "gpuform wrote nothing there (not even a manifest)"

    (there / "model.bin").write_bytes(os.urandom(50_000))  # changed behind gpuform's back
    plan = run_gpuform("-C", str(workdir), "plan", "--detailed-exitcode")
    assert plan.returncode == 2 and "# volume.qwen has changed" in plan.stdout
    assert "differs on localhost: 1 file(s) with another checksum (model.bin)" in plan.stdout
    failed = run_gpuform("-C", str(workdir), "apply", "--auto-approve")
    assert failed.returncode == 1 and "gpuform does not write there" in failed.stderr and "Traceback" not in failed.stderr

    (there / "model.bin").unlink()
    (there / "model.bin").write_bytes(before["model.bin"][2])
    assert run_gpuform("-C", str(workdir), "apply", "--auto-approve").returncode == 0
    after = _snapshot(there)
    destroyed = run_gpuform("-C", str(workdir), "destroy", "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stderr
    assert _snapshot(there) == after, "destroy leaves files it did not put there"


def test_a_missing_path_or_source_stops_apply_and_plan_with_the_place_to_fix(workdir: Path, tmp_path: Path) -> None:
    write_config(workdir, f"""
        pools: {{here: {{provider: local}}}}
        volumes:
          gone: {{pool: here, path: {tmp_path / "nowhere"}}}
        """)
    failed = run_gpuform("-C", str(workdir), "apply", "--auto-approve")
    assert failed.returncode == 1 and f"volume path {tmp_path / 'nowhere'}: missing on localhost" in failed.stderr
    assert not (tmp_path / "nowhere").exists()

    write_config(workdir, f"""
        pools: {{here: {{provider: local}}}}
        volumes:
          weights: {{pool: here, path: {tmp_path / "staged"}, source: ./models/qwen}}
        """)
    plan = run_gpuform("-C", str(workdir), "plan")
    assert plan.returncode == 1 and "Plan:" not in plan.stdout
    assert 'gpuform.yaml:3:' in plan.stderr and 'volume source "./models/qwen" does not exist' in plan.stderr


def test_an_interrupted_staging_resumes_where_it_stopped(workdir: Path, tmp_path: Path) -> None:
    """Killed (-9) after 5 of 12 files, the next apply copies 7; interrupted (Ctrl-C, which taints the
    volume) after 5 of 12 new files, the next plan updates it rather than replacing it, and copies the rest."""
    (workdir / "model").mkdir()
    for i in range(12):
        (workdir / "model" / f"a{i:02}.bin").write_bytes(os.urandom(64_000))
    volpath = tmp_path / "staged"
    write_config(workdir, f"""
        pools: {{here: {{provider: local}}}}
        volumes:
          weights: {{pool: here, path: {volpath}, source: ./model}}
        """)
    d = str(workdir)
    killed = run_gpuform("-C", d, "apply", "--auto-approve", env={"GPUFORM_FAULT_KILL_AT": "volume.placed:5"})
    assert killed.returncode == -9
    again = run_gpuform("-C", d, "apply", "--auto-approve", check=True)
    assert "Apply complete!" in again.stdout
    assert _computed(workdir, "volume.weights")["hosts"]["localhost"]["copied"] == 7

    for i in range(12):
        (workdir / "model" / f"b{i:02}.bin").write_bytes(os.urandom(64_000))
    interrupted = run_gpuform("-C", d, "apply", "--auto-approve",
                              env={"GPUFORM_FAULT_KILL_AT": "volume.placed:5", "GPUFORM_FAULT_SIGNAL": "INT"})
    assert interrupted.returncode == 130 and "volume staging interrupted" in interrupted.stderr, interrupted.stderr
    plan = run_gpuform("-C", d, "plan", "--detailed-exitcode")
    assert plan.returncode == 2 and "volume.weights will be updated in-place (a previous apply failed" in plan.stdout
    assert "destroy" not in plan.stdout.split("Plan:")[0]
    assert "7 file(s), 448000 bytes to copy to localhost" in plan.stdout, "the record kept what was verified"
    run_gpuform("-C", d, "apply", "--auto-approve", check=True)
    assert _computed(workdir, "volume.weights")["hosts"]["localhost"]["copied"] == 7
    assert run_gpuform("-C", d, "plan", "--detailed-exitcode").returncode == 0
    assert sorted(p.name for p in volpath.iterdir()) == sorted([".gpuform-manifest.json", *(
        p.name for p in (workdir / "model").iterdir())])
