"""Two teammates, two clones of one configuration, one postgres backend (and one GPUFORM_SECRETS_KEY), each
running gpuform as their own process with their own HOME: what one applies the other sees as no change, a
plan saved before the other's apply is refused, concurrent applies name the lock's holder, a killed apply
leaves no lock behind, and the audit log says who applied what and when. On a local pool and on h1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.helpers import wait_for
from tests.integration.teamwork import PROVIDERS, Clone, clone, leftovers, pool_and_gateway
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

NEVER_READY = """
  slow:
    pool: p
    worker: {command: [python, -c, "import time; time.sleep(300)"]}
    scaling: {min_workers: 1, max_workers: 1}
"""


def config(provider: str, schema: str, port: int, max_workers: int, extra: str = "") -> str:
    return (f"backend: {{type: postgres, schema_name: {schema}}}\n" + pool_and_gateway(provider, str(port))
            + "endpoints:\n  echo:\n    pool: p\n    worker: {template: echo}\n"
            + f"    scaling: {{min_workers: 0, max_workers: {max_workers}, idle_timeout: 5s}}\n" + extra)


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[Clone, Clone, str]]:
    """Alice's and Bob's clones on a fresh schema; whatever is left is destroyed, then the schema dropped."""
    schema = fresh_schema()
    shared = {"GPUFORM_BACKEND_URL": postgres_url(), "GPUFORM_SECRETS_KEY": "team-key-" + schema}
    alice = clone(tmp_path, "alice", {**shared, "GPUFORM_ACTOR": "alice"})
    bob = clone(tmp_path, "bob", {**shared, "GPUFORM_ACTOR": "bob"})
    yield alice, bob, schema
    try:
        if (alice.directory / "gpuform.yaml").exists():
            alice.ok("destroy", "--auto-approve", timeout=600)
    finally:
        drop_schema(schema)


def lineage_of(member: Clone) -> str:
    pulled = member.ok("state", "pull").stdout
    return str(json.loads(pulled)["lineage"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_two_clones_share_one_deployment_through_the_postgres_backend(
        provider: str, team: tuple[Clone, Clone, str], tmp_path: Path) -> None:
    alice, bob, schema = team
    port = free_port()
    for member in (alice, bob):
        member.write(config(provider, schema, port, max_workers=2))
    alice.ok("apply", "--auto-approve")
    lineage = lineage_of(bob)

    same = bob.run("plan", "-detailed-exitcode")
    assert same.returncode == 0 and "No changes" in same.stdout, same.stdout + same.stderr

    for member in (alice, bob):  # both pull the commit that raises max_workers
        member.write(config(provider, schema, port, max_workers=3))
    saved = tmp_path / "alice.plan"
    assert alice.run("plan", "-out", str(saved)).returncode == 0
    bob.ok("apply", "--auto-approve")
    stale = alice.run("apply", str(saved))
    assert stale.returncode == 1 and "the saved plan is stale" in stale.stderr, stale.stdout + stale.stderr
    assert "gpuform plan -out FILE" in stale.stderr

    _concurrent_applies_name_the_holder_and_a_killed_one_frees_the_lock(alice, bob, provider, schema, port)

    events = json.loads(alice.ok("state", "audit", "--json").stdout)
    applies = [(e["who"], e["operation"]) for e in events if e["operation"] == "apply"]
    assert applies == [("bob", "apply"), ("alice", "apply")], events  # newest first; the killed one is absent
    assert all(e["at"] and "applied" in e["detail"] for e in events if e["operation"] == "apply"), events
    bob.ok("destroy", "--auto-approve", timeout=600)
    assert not leftovers(provider, lineage, Path(os.environ["GPUFORM_DATA_DIR"]))


def _concurrent_applies_name_the_holder_and_a_killed_one_frees_the_lock(alice: Clone, bob: Clone, provider: str,
                                                                        schema: str, port: int) -> None:
    for member in (alice, bob):  # an endpoint whose worker never becomes ready: apply waits, holding the lock
        member.write(config(provider, schema, port, max_workers=3, extra=NEVER_READY))
    log = alice.directory.parent / "bob-apply.log"
    with open(log, "w") as out:
        holder = subprocess.Popen([sys.executable, "-m", "gpuform", "-C", str(bob.directory), "apply",
                                   "--auto-approve", "--wait-timeout", "120"],
                                  env={**os.environ, "NO_COLOR": "1", **bob.env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "endpoint.slow: waiting for 1 ready worker" in log.read_text(), 120,
                 what="bob's apply to wait for the never-ready worker")
        started = time.monotonic()
        blocked = alice.run("apply", "--auto-approve", "-lock-timeout", "2s")
        assert time.monotonic() - started >= 2, "alice's apply waited for the lock as long as -lock-timeout"
        assert blocked.returncode == 1 and "Error acquiring the state lock" in blocked.stderr, blocked.stderr
        assert f"Who:       bob (pid {holder.pid} on " in blocked.stderr and "Operation: apply" in blocked.stderr
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    finally:
        holder.kill()
        holder.wait()
    after = alice.run("plan", "-detailed-exitcode")  # no force-unlock: the lock died with bob's session
    assert after.returncode in (0, 2) and "lock" not in after.stderr.lower(), after.stdout + after.stderr
