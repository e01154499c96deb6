"""What replicas take from each other's records (gateway/shared_state.py): endpoint changes by revision, and
the leader's view of conditions and decisions."""

from __future__ import annotations

import pytest

from gpuform.gateway.autoscaler import Decision
from gpuform.gateway.fleet import Condition
from gpuform.gateway.shared_state import endpoint_changes, take_view, view_of

pytestmark = pytest.mark.unit


def test_new_changed_and_removing_endpoints_are_loaded_and_missing_ones_removed_unless_removed_here() -> None:
    known = {"same": ("r1", False), "changed": ("r1", False), "gone": ("r1", False), "mine": ("r1", True),
             "removed elsewhere": ("r1", False)}
    stored = {"same": ("r1", False), "changed": ("r2", False), "new": ("r1", False), "mine": ("r1", True),
              "removed elsewhere": ("r1", True)}
    changes = endpoint_changes(known, stored, {"mine"})
    assert changes.load == ("changed", "new", "removed elsewhere") and changes.removed == ("gone",)
    assert endpoint_changes(known, {}, {"mine"}).removed == ("changed", "gone", "removed elsewhere", "same")


def test_a_follower_takes_the_leaders_conditions_and_decisions_and_drops_stale_decisions() -> None:
    leader = {"ep": Condition("SPEND_CAP", "spending cap reached", since=5.0, failures=2, backoff_until=9.0)}
    decided = {"ep": Decision(2, 0, (), "SPEND_CAP", ("spending cap reached",))}
    text = view_of(["ep", "idle"], leader, decided)
    assert text == view_of(["idle", "ep"], dict(leader), dict(decided)), "one view, one text"
    mine: dict[str, Condition] = {}
    decisions = {"gone": Decision(1, 1, ())}
    take_view(text, mine, decisions)
    cond = mine["ep"]
    assert (cond.status, cond.message, cond.since, cond.failures, cond.backoff_until) == (
        "SPEND_CAP", "spending cap reached", 5.0, 2, 9.0)
    assert decisions == {"ep": Decision(2, 0, (), "SPEND_CAP", ("spending cap reached",))}
