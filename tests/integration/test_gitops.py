"""examples/gitops/gpuform-ci.sh end to end on the test PostgreSQL and a local pool: a pull request's plan and
comment, the apply of exactly that plan after the merge, a stale plan refused, and the scheduled drift check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuform.state.model import State
from gpuform.state.postgres import PostgresBackend
from gpuform.util import procs
from tests.conftest import REPO, free_port, local_config, run_gpuform, write_config
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SCRIPT = REPO / "examples" / "gitops" / "gpuform-ci.sh"
ARTIFACT = ("gpuform.plan", "status", "plan.md")  # what the workflow uploads and the apply job downloads


@dataclass
class Ci:
    """The CI script run as the workflow runs it, against one configuration directory and backend schema."""

    config: Path
    schema: str
    env: dict[str, str]

    def run(self, command: str, out: Path, **extra: str) -> tuple[int, str, Path]:
        """Run ``gpuform-ci.sh COMMAND``; returns its exit status, the status it recorded and its output dir."""
        env = {**os.environ, **self.env, "GPUFORM_OUT": str(out), **extra}
        proc = subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, (out / "status").read_text().strip(), out

    def downloaded(self, pr: Path, into: Path) -> Path:
        """The plan artifact as the apply job downloads it: only the files the workflow uploads."""
        into.mkdir()
        for name in ARTIFACT:
            shutil.copy(pr / name, into / name)
        return into

    def edit(self, old: str, new: str) -> None:
        path = self.config / "gpuform.yaml"
        path.write_text(path.read_text().replace(old, new))

    def state(self) -> State:
        backend = PostgresBackend(postgres_url(), self.schema)
        try:
            return backend.store("default").read()
        finally:
            backend.close()


@pytest.fixture
def ci(tmp_path: Path) -> Iterator[Ci]:
    schema = fresh_schema()
    config = tmp_path / "repo"
    config.mkdir()
    backend = f"backend: {{type: postgres, url: \"${{env.GPUFORM_BACKEND_URL}}\", schema_name: {schema}}}\n"
    write_config(config, backend + local_config(free_port()))
    env = {"GPUFORM_BACKEND_URL": postgres_url(), "GPUFORM_SECRETS_KEY": "team-key-for-tests",
           "GPUFORM": f"{sys.executable} -m gpuform", "GPUFORM_DIR": str(config), "GPUFORM_LOCK_TIMEOUT": "30s",
           "GPUFORM_REVISION": "0123456789abcdef"}
    made = Ci(config, schema, env)
    try:
        yield made
        if made.state().resources:
            destroyed = run_gpuform("-C", str(config), "destroy", "-auto-approve", env=env)
            assert destroyed.returncode == 0, f"destroy after the test failed (it leaks):\n{destroyed.stderr}"
    finally:
        drop_schema(schema)


def test_pull_request_plan_apply_stale_plan_and_drift(ci: Ci, tmp_path: Path) -> None:
    # A pull request: validate and plan; the comment carries the plan and the hidden marker that finds it.
    code, status, pr1 = ci.run("pr", tmp_path / "pr1")
    assert (code, status, (pr1 / "exit-code").read_text()) == (0, "changes", "2\n")
    comment = (pr1 / "comment.md").read_text()
    assert comment.startswith("<!-- gpuform-plan:default -->\n") and (pr1 / "marker").read_text().strip() in comment
    assert "| `gateway.main` | + create |" in comment and "Plan: 3 to add, 0 to change, 0 to destroy." in comment
    assert "applies **exactly this plan**" in comment and "commit `0123456789ab`" in comment

    # The merge: the apply job applies exactly the downloaded plan.
    code, status, applied = ci.run("apply", tmp_path / "apply1", GPUFORM_PLAN_DIR=str(ci.downloaded(pr1, tmp_path / "a1")))
    assert (code, status) == (0, "applied"), (applied / "log").read_text()
    assert "Apply complete! Resources: 3 added" in (applied / "comment.md").read_text()

    # Two pull requests planned against the same state; the first merged wins, the second's plan is stale.
    ci.edit("max_workers: 2", "max_workers: 3")
    _, status2, pr2 = ci.run("pr", tmp_path / "pr2")
    _, status3, pr3 = ci.run("pr", tmp_path / "pr3")
    assert status2 == status3 == "changes" and "max_workers" in (pr2 / "comment.md").read_text()
    code, status, _ = ci.run("apply", tmp_path / "apply3", GPUFORM_PLAN_DIR=str(ci.downloaded(pr3, tmp_path / "a3")))
    assert (code, status) == (0, "applied")
    code, status, stale = ci.run("apply", tmp_path / "apply2", GPUFORM_PLAN_DIR=str(ci.downloaded(pr2, tmp_path / "a2")))
    assert (code, status, (stale / "exit-code").read_text()) == (1, "stale", "1\n")
    comment = (stale / "comment.md").read_text()
    assert "the reviewed plan is stale — nothing was applied" in comment and "saved plan is stale" in comment
    assert "No changes." in comment, "the re-plan shows what applying the configuration would do now"

    # A pull request that changes nothing: its merge applies nothing.
    code, status, pr4 = ci.run("pr", tmp_path / "pr4")
    assert (code, status) == (0, "no-changes")
    code, status, _ = ci.run("apply", tmp_path / "apply4", GPUFORM_PLAN_DIR=str(ci.downloaded(pr4, tmp_path / "a4")))
    assert (code, status) == (0, "no-changes")

    # The drift check: nothing to report, then the gateway stopped behind gpuform's back.
    code, status, quiet = ci.run("drift", tmp_path / "drift1")
    assert (code, status) == (0, "no-drift") and not (quiet / "issue.md").exists()
    for pid in procs.find_by_labels({"gpuform.lineage": ci.state().lineage, "gpuform.address": "gateway.main"}):
        procs.terminate(pid, grace=10)
    code, status, drifted = ci.run("drift", tmp_path / "drift2")
    assert (code, status, (drifted / "exit-code").read_text()) == (0, "drift", "2\n")
    issue = (drifted / "issue.md").read_text()
    assert issue.startswith("<!-- gpuform-drift:default -->\n") and "`gateway.main` (deleted)" in issue
    assert (drifted / "issue-title").read_text().strip() == "gpuform: drift in default"


def test_failures_are_recorded_for_the_comment(ci: Ci, tmp_path: Path) -> None:
    ci.edit("idle_timeout: 5s", "idle_timeot: 5s")
    code, status, pr = ci.run("pr", tmp_path / "pr")
    assert (code, status) == (1, "error") and not (pr / "gpuform.plan").exists()
    comment = (pr / "comment.md").read_text()
    assert "gpuform plan failed: the configuration is not valid" in comment and "idle_timeot" in comment
    code, status, applied = ci.run("apply", tmp_path / "apply", GPUFORM_PLAN_DIR=str(tmp_path / "missing"))
    assert (code, status) == (1, "no-plan") and "nothing was applied" in (applied / "comment.md").read_text()
    code, status, drift = ci.run("drift", tmp_path / "drift", GPUFORM_BACKEND_URL="postgresql://nobody@127.0.0.1:1/x")
    assert (code, status) == (1, "error") and "drift check of default failed" in (drift / "issue-title").read_text()
    assert "cannot connect to the postgres backend" in (drift / "issue.md").read_text()


def test_the_script_explains_its_usage(tmp_path: Path) -> None:
    usage = subprocess.run(["bash", str(SCRIPT), "plan"], capture_output=True, text=True, check=False,
                           env={**os.environ, "GPUFORM_OUT": str(tmp_path / "out")})
    assert usage.returncode == 64
    assert all(f"gpuform-ci.sh {command}" in usage.stderr for command in ("pr", "apply", "drift"))
