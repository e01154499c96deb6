"""The planner is a pure function of (desired, state, observed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuform.config.load import load
from gpuform.errors import PlanError
from gpuform.plan.cost import format_cost
from gpuform.plan.model import Observed, Plan
from gpuform.plan.planner import PlanOptions, plan
from gpuform.plan.render import render_json, render_markdown, render_text
from gpuform.resources.desired import Desired, build
from gpuform.state.model import ResourceState, State
from tests.conftest import write_config

pytestmark = pytest.mark.unit

BASE = """
pools:
  lab: {provider: local, price_per_gpu_second: {H100-80GB: 0.001, cpu: 0.00001}}
gateway:
  main: {pool: lab, listen: 127.0.0.1:8080, api_keys: {app: "${env.KEY}"}}
endpoints:
  chat:
    pool: lab
    worker: {template: echo, env: {TOKEN: "${env.TOKEN}", MODE: fast}}
    gpu: {types: [H100-80GB], count: 2}
    scaling: {min_workers: 1, max_workers: 4}
"""
ENV = {"KEY": "k1", "TOKEN": "t1"}


def desired_of(tmp_path: Path, text: str = BASE, env: dict[str, str] | None = None,
               lineage: str = "L") -> dict[str, Desired]:
    write_config(tmp_path, text)
    return build(load(tmp_path, env=env or ENV), lineage)


def applied(desired: dict[str, Desired], lineage: str = "L") -> State:
    state = State(lineage=lineage, serial=3)
    for addr, d in desired.items():
        state.resources[addr] = ResourceState(addr, d.kind, d.name, d.provider, json.loads(json.dumps(d.attributes)),
                                              computed={"pid": 42}, sensitive_paths=d.sensitive_paths,
                                              dependencies=sorted(d.dependencies))
    return state


def actions(p: Plan) -> dict[str, str]:
    return {c.address: c.action for c in p.changes}


def test_empty_state_plans_creates_in_dependency_order(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    p = plan(desired, State(lineage="L"), None)
    assert actions(p) == {"endpoint.chat": "create", "gateway.main": "create", "pool.lab": "create"}
    assert p.counts() == {"import": 0, "add": 3, "change": 0, "destroy": 0}
    assert desired["endpoint.chat"].dependencies == {"pool.lab", "gateway.main"}


def test_applied_state_plans_no_changes_and_computed_values_never_diff(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    state = applied(desired)
    observed = {"endpoint.chat": Observed(True, {}, {"workers": {"running": 3}, "pid": 7})}
    p = plan(desired, state, observed)
    assert set(actions(p).values()) == {"no-op"} and not p.drift and not p.has_changes


def test_notes_of_an_unchanged_resource_are_warnings(tmp_path: Path) -> None:
    """A note refresh found on a resource the plan does not list (a worker's handler gone from a host) is shown."""
    desired = desired_of(tmp_path)
    observed = {"endpoint.chat": Observed(True, notes=["the handler /srv/app/handler.py does not exist on h2"])}
    p = plan(desired, applied(desired), observed)
    assert not p.has_changes and p.warnings == ["endpoint.chat: the handler /srv/app/handler.py does not exist on h2"]
    assert "Warning: endpoint.chat: the handler /srv/app/handler.py does not exist on h2" in render_text(p)
    updated = plan(desired, applied(desired), {"endpoint.chat": Observed(True, notes=["n"], repair=["r"])})
    assert updated.warnings == [] and "    n" in render_text(updated), "a listed change shows its notes itself"


def test_update_in_place_names_changed_fields(tmp_path: Path) -> None:
    state = applied(desired_of(tmp_path))
    p = plan(desired_of(tmp_path, BASE.replace("max_workers: 4", "max_workers: 8")), state, None)
    change = next(c for c in p.changes if c.address == "endpoint.chat")
    assert change.action == "update" and not change.replace_paths
    assert "~ max_workers = 4 -> 8" in render_text(p)


def test_a_field_that_cannot_change_in_place_forces_replacement(tmp_path: Path) -> None:
    text = BASE.replace("pools:\n", "pools:\n  other: {provider: local}\n")
    state = applied(desired_of(tmp_path, text))
    p = plan(desired_of(tmp_path, text.replace("chat:\n    pool: lab", "chat:\n    pool: other")), state, None)
    change = next(c for c in p.changes if c.address == "endpoint.chat")
    assert change.actions == ["delete", "create"] and change.replace_paths == [["pool"]]
    assert "# forces replacement" in render_text(p)
    assert p.counts() == {"import": 0, "add": 1, "change": 1, "destroy": 1}  # gateway.main now drives pool "other" too


def test_removed_resources_are_deleted_and_prevent_destroy_refuses(tmp_path: Path) -> None:
    state = applied(desired_of(tmp_path))
    without = desired_of(tmp_path, BASE.split("endpoints:", maxsplit=1)[0])
    p = plan(without, state, None)
    assert actions(p)["endpoint.chat"] == "delete"
    assert p.changes[0].action_reason == "delete_because_no_resource_config"
    protected = applied(desired_of(tmp_path, BASE.replace("pool: lab\n    worker", "pool: lab\n    prevent_destroy: true\n"
                                                                                  "    worker")))
    with pytest.raises(PlanError, match="prevent_destroy"):
        plan(without, protected, None)
    with pytest.raises(PlanError, match=r"endpoint\.chat"):
        plan(desired_of(tmp_path, BASE.replace("pool: lab\n    worker", "pool: lab\n    prevent_destroy: true\n"
                                                                         "    worker")), protected, None,
             PlanOptions(mode="destroy"))


def test_drift_is_reported_apart_and_repaired_by_the_plan(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    state = applied(desired)
    edited = json.loads(json.dumps(state.resources["endpoint.chat"].attributes))
    edited["worker"]["env"]["MODE"] = "slow"
    observed = {"gateway.main": Observed(False), "endpoint.chat": Observed(True, edited)}
    p = plan(desired, state, observed)
    assert {d.address: d.after is None for d in p.drift} == {"gateway.main": True, "endpoint.chat": False}
    chat_drift = next(d for d in p.drift if d.address == "endpoint.chat")
    assert chat_drift.changed_paths == [["worker", "env", "MODE"]]
    assert actions(p) == {"endpoint.chat": "update", "gateway.main": "create", "pool.lab": "no-op"}
    text = render_text(p)
    assert text.index("changed outside of gpuform") < text.index("will perform the following actions")
    assert "# gateway.main has been deleted" in text and '~ MODE = "slow" -> "fast"' in text


def test_refresh_errors_keep_the_prior_state_and_warn(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    p = plan(desired, applied(desired), {"gateway.main": Observed(True, error="host unreachable")})
    assert not p.has_changes and any("could not refresh (host unreachable)" in w for w in p.warnings)
    assert len(p.refresh_errors) == 1 and p.to_json()["errored"] and not p.to_json()["applyable"], \
        "a plan that could not see reality is an error (gpuform plan exits 1), as in Terraform"


def test_interrupted_create_is_adopted_not_duplicated(tmp_path: Path) -> None:
    from gpuform.state.model import PendingOp

    desired = desired_of(tmp_path)
    state = applied(desired)
    del state.resources["gateway.main"]
    state.pending.append(PendingOp("gateway.main", "create", "t"))
    p = plan(desired, state, {"gateway.main": Observed(True, dict(desired["gateway.main"].attributes), {"pid": 9})})
    assert actions(p)["gateway.main"] == "no-op"
    assert p.refreshed is not None and p.refreshed.resources["gateway.main"].computed == {"pid": 9}
    assert not p.refreshed.pending


def test_secrets_are_hashed_in_attributes_and_masked_in_every_rendering(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    blob = json.dumps({a: d.attributes for a, d in desired.items()})
    assert "k1" not in blob and "t1" not in blob
    state = applied(desired)
    p = plan(desired_of(tmp_path, env={"KEY": "k2", "TOKEN": "t2"}), state, None)
    assert actions(p)["gateway.main"] == "update" and actions(p)["endpoint.chat"] == "update"
    for text in (render_text(p), render_markdown(p), render_json(p)):
        assert "k1" not in text and "k2" not in text and "t2" not in text
    assert "(sensitive value) -> (sensitive value)" in render_text(p)
    change = next(c for c in p.changes if c.address == "endpoint.chat")
    assert change.to_json()["change"]["after_sensitive"] == {"worker": {"env": {"TOKEN": True}}}


def test_cost_per_hour_at_min_and_max_and_unknown_price_is_not_zero(tmp_path: Path) -> None:
    p = plan(desired_of(tmp_path), State(lineage="L"), None)
    cost = next(c for c in p.changes if c.address == "endpoint.chat").cost
    assert cost is not None
    assert cost.currency_per_hour_min == pytest.approx(0.001 * 2 * 3600 * 1)
    assert cost.currency_per_hour_max == pytest.approx(0.001 * 2 * 3600 * 4)
    unpriced = plan(desired_of(tmp_path, BASE.replace("H100-80GB: 0.001, ", "")), State(lineage="L"), None)
    cost = next(c for c in unpriced.changes if c.address == "endpoint.chat").cost
    assert cost is not None and cost.currency_per_hour_max is None
    assert "unknown/h at max_workers" in render_text(unpriced) and "$0.00" not in render_text(unpriced)


def test_small_costs_keep_two_significant_digits_and_are_never_shown_as_zero() -> None:
    assert [format_cost(v) for v in (0.0, 0.000035, 0.0042, 0.01, 1234.5)] == [
        "$0.00", "$0.000035", "$0.0042", "$0.01", "$1,234.50"]
    assert format_cost(None) == "unknown"


def test_targets_limit_the_plan_to_a_resource_and_its_dependencies(tmp_path: Path) -> None:
    desired = desired_of(tmp_path, BASE + "  other: {pool: lab}\n")
    p = plan(desired, State(lineage="L"), None, PlanOptions(targets=("endpoint.chat",)))
    assert set(actions(p)) == {"endpoint.chat", "gateway.main", "pool.lab"}
    with pytest.raises(PlanError, match="matches no resource"):
        plan(desired, State(lineage="L"), None, PlanOptions(targets=("endpoint.nope",)))


def test_replace_by_request_and_tainted(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    state = applied(desired)
    p = plan(desired, state, None, PlanOptions(replace=("gateway.main",)))
    assert actions(p)["gateway.main"] == "replace" and actions(p)["endpoint.chat"] == "update"
    state.resources["endpoint.chat"].status = "tainted"
    assert actions(plan(desired, state, None))["endpoint.chat"] == "replace"


def test_refresh_only_records_drift_and_changes_nothing(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    p = plan(desired, applied(desired), {"gateway.main": Observed(False)}, PlanOptions(mode="refresh-only"))
    assert not p.changes and p.has_changes and p.refreshed is not None
    assert "gateway.main" not in p.refreshed.resources


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    p = plan(desired, applied(desired), {"gateway.main": Observed(False)}, PlanOptions(config_digest="abc"))
    again = Plan.from_json(json.loads(render_json(p)))
    assert again.to_json() == p.to_json()
    data = json.loads(render_json(p))
    assert data["resource_changes"][0]["change"]["actions"] and "resource_drift" in data


def test_capacity_warnings_from_inventory(tmp_path: Path) -> None:
    desired = desired_of(tmp_path)
    hosts = [{"name": "h1", "reachable": True, "cordoned": False,
              "gpus": [{"type": "H100-80GB"}, {"type": "H100-80GB"}, {"type": "H100-80GB"}]}]
    p = plan(desired, State(lineage="L"), {"pool.lab": Observed(True, {}, {"hosts": hosts})})
    assert any("needs 8 GPUs" in w and "has 3" in w for w in p.warnings)
    hosts[0]["gpus"] = [{"type": "A100-80GB"}]
    p = plan(desired, State(lineage="L"), {"pool.lab": Observed(True, {}, {"hosts": hosts})})
    assert any("no usable host in pool.lab has a GPU of type H100-80GB" in w for w in p.warnings)


def test_markdown_is_a_pull_request_comment(tmp_path: Path) -> None:
    p = plan(desired_of(tmp_path), State(lineage="L"), None)
    md = render_markdown(p, "prod")
    assert md.startswith("### gpuform plan — prod")
    assert "| `endpoint.chat` | + create | new | $7.20 → $28.80 |" in md
    assert "**Plan: 3 to add, 0 to change, 0 to destroy.**" in md and "```diff" in md


def test_changed_paths_name_each_leaf_key_and_list_item_that_differs() -> None:
    from gpuform.plan.planner import changed_paths

    before = {"a": 1, "b": {"c": [1, 2, 3], "d": "x"}, "e": True, "gone": 0}
    after = {"a": 1.0, "b": {"c": [1, 5], "d": "x", "new": {}}, "e": 1}
    assert changed_paths(before, after) == [["a"], ["b", "c", 1], ["b", "c", 2], ["b", "new"], ["e"], ["gone"]]
    assert changed_paths(before, before) == []


def test_a_gateway_recorded_before_request_history_reads_it_at_its_default() -> None:
    from gpuform.config import schema
    from gpuform.resources.desired import current_attributes

    old = schema.GatewayTimings().model_dump(mode="json")
    del old["request_history"]
    now = current_attributes("gateway", {"timings": old, "store": {"type": "sqlite"}, "replicas": 1})
    assert now["timings"] == schema.GatewayTimings().model_dump(mode="json"), "upgrading alone plans no change"
