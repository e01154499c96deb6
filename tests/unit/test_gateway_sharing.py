"""How a replica's copy of a worker takes what other replicas recorded in its row (gateway/sharing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gpuform.gateway.sharing import absorb
from gpuform.gateway.states import WorkerState
from gpuform.gateway.workers import WorkerRecord
from gpuform.provider import WorkerInfo

pytestmark = pytest.mark.unit
T = 1000.0


def worker(**fields: Any) -> WorkerRecord:
    return WorkerRecord(id="w1", endpoint="ep", pool="gpu", revision="r", token_hash="h", requested_at=T, **fields)


def test_a_worker_ready_on_another_replica_is_idle_here_since_its_row_says() -> None:
    mine = worker()
    row = worker(state=WorkerState.IDLE, idle_since=T + 5, ready_at=T + 4, last_seen=T + 6,
                 timeline={"ready": T + 4}, billed_until=T + 3, host="h1",
                 info=WorkerInfo("w1", "ep", "h1", "running", "cpu"))
    absorb(mine, row, starting=False, now=T + 7)
    assert (mine.state, mine.idle_since, mine.ready_at, mine.last_seen) == (WorkerState.IDLE, T + 5, T + 4, T + 6)
    assert mine.info is not None and mine.host == "h1" and mine.billed_until == T + 3
    assert mine.timeline == {"ready": T + 4}


def test_jobs_held_here_keep_a_worker_running_and_a_stale_row_never_takes_contact_or_billing_back() -> None:
    mine = worker(state=WorkerState.RUNNING, jobs={"j1"}, last_seen=T + 9, billed_until=T + 8)
    absorb(mine, worker(state=WorkerState.IDLE, idle_since=T + 2, last_seen=T + 3, billed_until=T + 1),
           starting=False, now=T + 10)
    assert (mine.state, mine.last_seen, mine.billed_until) == (WorkerState.RUNNING, T + 9, T + 8)


def test_what_only_the_leader_sets_is_taken_but_never_over_a_start_in_flight() -> None:
    stopping = worker(state=WorkerState.STOPPING, exit_reason="idle")
    mine = worker(state=WorkerState.IDLE, idle_since=T)
    absorb(mine, stopping, starting=False, now=T + 1)
    assert (mine.state, mine.exit_reason) == (WorkerState.STOPPING, "idle")
    starting = worker()
    absorb(starting, stopping, starting=True, now=T + 1)
    assert starting.state == WorkerState.INITIALIZING


def test_a_worker_woken_here_that_said_awake_to_another_replica_is_idle() -> None:
    mine = worker(state=WorkerState.INITIALIZING, waking=True, timeline={"wake_requested": T + 10})
    absorb(mine, worker(timeline={"awake": T + 5}), starting=False, now=T + 11)
    assert mine.waking, "an awake from before this wake does not count"
    absorb(mine, worker(timeline={"awake": T + 12}), starting=False, now=T + 13)
    assert (mine.waking, mine.state, mine.idle_since) == (False, WorkerState.IDLE, T + 13)
