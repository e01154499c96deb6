"""The gateway's ``store:`` and ``replicas:`` in the configuration: the deprecated ``queue:`` still loads (a
located warning, and no plan diff for a deployment made with it), the store's URL is kept only as a hash,
and replicas are refused where they cannot run (no shared store, fewer hosts than replicas)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpuform.config.load import load
from gpuform.errors import ConfigError
from gpuform.plan.planner import plan
from gpuform.plan.render import render_json, render_text
from gpuform.resources.desired import Desired, build
from gpuform.spec import GatewaySettings
from gpuform.state.model import ResourceState, State
from tests.conftest import write_config

pytestmark = pytest.mark.unit

URL = "postgresql://gw:pg-pass-123@db.lab:5432/gpuform"
CONFIG = """
pools:
  lab: {provider: local}
gateway:
  main:
    pool: lab
    GATEWAY_FIELDS
"""


def _write(tmp_path: Path, fields: str) -> None:
    write_config(tmp_path, CONFIG.replace("GATEWAY_FIELDS", fields))


def _diagnostics(tmp_path: Path, fields: str) -> list[str]:
    _write(tmp_path, fields)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={"DB": URL})
    return [d.render() for d in info.value.diagnostics]


def _applied(desired: dict[str, Desired]) -> State:
    state = State(lineage="L", serial=1)
    for addr, d in desired.items():
        state.resources[addr] = ResourceState(addr, d.kind, d.name, d.provider, json.loads(json.dumps(d.attributes)),
                                              sensitive_paths=d.sensitive_paths)
    return state


def test_queue_sqlite_loads_with_a_located_deprecation_warning(tmp_path: Path) -> None:
    _write(tmp_path, "queue: sqlite")
    config = load(tmp_path, env={})
    (warning,) = [d.render() for d in config.warnings]
    assert re.search(r"gpuform\.yaml:6:\d+: warning: .*`queue: sqlite` is deprecated", warning), warning
    assert "store: {type: sqlite}" in warning
    assert config.gateways["main"].store.type == "sqlite"


def test_a_deployment_made_with_queue_sqlite_plans_no_change(tmp_path: Path) -> None:
    _write(tmp_path, "queue: sqlite")
    desired = build(load(tmp_path, env={}), "L")
    state = _applied(desired)
    legacy = state.resources["gateway.main"].attributes
    del legacy["store"], legacy["replicas"]
    legacy["queue"] = "sqlite"  # what gpuform recorded before `store:`
    assert plan(desired, state, None).changes and all(c.action == "no-op" for c in plan(desired, state, None).changes)
    _write(tmp_path, "store: {type: sqlite}")
    assert all(c.action == "no-op" for c in plan(build(load(tmp_path, env={}), "L"), state, None).changes)
    _write(tmp_path, 'store: {type: postgres, url: "${env.DB}"}')
    changes = {c.address: c for c in plan(build(load(tmp_path, env={"DB": URL}), "L"), state, None).changes}
    assert changes["gateway.main"].action == "replace" and ["store", "type"] in changes["gateway.main"].replace_paths


def test_the_store_url_is_kept_only_as_a_hash_and_travels_beside_the_attributes(tmp_path: Path) -> None:
    _write(tmp_path, 'store: {type: postgres, url: "${env.DB}", schema_name: gw_main}')
    desired = build(load(tmp_path, env={"DB": URL}), "L")
    gw = desired["gateway.main"]
    assert gw.secrets[("store", "url")] == URL and ["store", "url"] in gw.sensitive_paths
    assert str(gw.attributes["store"]["url"]).startswith("sensitive:")
    p = plan(desired, State(lineage="L"), None)
    assert "pg-pass-123" not in render_text(p) + json.dumps(render_json(p)) + json.dumps(gw.attributes)
    settings = GatewaySettings.model_validate(gw.attributes)  # what apply writes into the gateway's config
    assert settings.store.schema_name == "gw_main" and "pg-pass-123" not in settings.model_dump_json()


def test_a_literal_store_url_is_sensitive_too(tmp_path: Path) -> None:
    _write(tmp_path, f"store: {{type: postgres, url: '{URL}'}}")
    gw = build(load(tmp_path, env={}), "L")["gateway.main"]
    assert "pg-pass-123" not in json.dumps(gw.attributes) and gw.secrets[("store", "url")] == URL


def test_replicas_need_a_postgres_store(tmp_path: Path) -> None:
    (found,) = _diagnostics(tmp_path, "replicas: 2")
    assert re.search(r"gpuform\.yaml:6:\d+: error: replicas: 2 needs a shared store", found), found
    assert "type: postgres" in found
    _write(tmp_path, 'replicas: 2\n    store: {type: postgres, url: "${env.DB}"}')
    config = load(tmp_path, env={"DB": URL})  # a local pool runs them on distinct ports
    assert config.gateways["main"].replicas == 2 and not config.warnings


HOSTS_CONFIG = """
pools:
  lab: {provider: baremetal, known_hosts: KNOWN, hosts: [HOSTS]}
gateway:
  main:
    pool: lab
    replicas: 2
    store: {type: postgres, url: "${env.DB}"}
"""


def test_replicas_on_a_pool_of_hosts_need_as_many_hosts(tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("")
    one = HOSTS_CONFIG.replace("KNOWN", str(tmp_path / "known_hosts"))
    write_config(tmp_path, one.replace("HOSTS", "{address: 10.77.0.11, name: h1}"))
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={"DB": URL})
    (found,) = [d.render() for d in info.value.diagnostics]
    assert re.search(r"gpuform\.yaml:6:\d+: error: replicas: 2 needs 2 hosts in pool lab, which has 1", found), found
    write_config(tmp_path, one.replace("HOSTS", "{address: 10.77.0.11, name: h1}, {address: 10.77.0.12, name: h2}"))
    assert load(tmp_path, env={"DB": URL}).gateways["main"].replicas == 2


def test_store_fields_are_checked_where_they_are_written(tmp_path: Path) -> None:
    (found,) = _diagnostics(tmp_path, "store: {type: postgres}")
    assert "gpuform.yaml:6:" in found and "needs `url`" in found
    (found,) = _diagnostics(tmp_path, "store: {type: sqlite, url: x}")
    assert "belong to a postgres store" in found
    found = "\n".join(_diagnostics(tmp_path, 'queue: sqlite\n    store: {type: postgres, url: "${env.DB}"}'))
    assert "gpuform.yaml:6:" in found and "queue: sqlite contradicts store" in found
    (found,) = _diagnostics(tmp_path, "store: {type: mysql}")
    assert "store.type" in found and "postgres" in found



def test_a_new_store_url_is_applied_in_place_but_another_schema_replaces_the_gateway(tmp_path: Path) -> None:
    _write(tmp_path, 'store: {type: postgres, url: "${env.DB}", schema_name: gw_a}')
    state = _applied(build(load(tmp_path, env={"DB": URL}), "L"))
    rotated = build(load(tmp_path, env={"DB": URL.replace("pg-pass-123", "pg-pass-456")}), "L")
    (change,) = [c for c in plan(rotated, state, None).changes if c.address == "gateway.main"]
    assert change.action == "update"
    _write(tmp_path, 'store: {type: postgres, url: "${env.DB}", schema_name: gw_b}')
    (change,) = [c for c in plan(build(load(tmp_path, env={"DB": URL}), "L"), state, None).changes
                 if c.address == "gateway.main"]
    assert change.action == "replace" and change.replace_paths == [["store", "schema_name"]]


def test_a_change_of_replicas_is_a_rolling_update_and_a_dead_replica_a_repair(tmp_path: Path) -> None:
    from gpuform.gateway.replicas import key_index, recorded, replica_key
    from gpuform.plan.model import Observed

    _write(tmp_path, 'store: {type: postgres, url: "${env.DB}"}')
    state = _applied(build(load(tmp_path, env={"DB": URL}), "L"))
    _write(tmp_path, 'store: {type: postgres, url: "${env.DB}"}\n    replicas: 2')
    desired = build(load(tmp_path, env={"DB": URL}), "L")
    (change,) = [c for c in plan(desired, state, None).changes if c.address == "gateway.main"]
    assert change.action == "update" and change.notes == [
        "restarts the 2 replicas one at a time, each healthy before the next (requests in flight on a restarting "
        "replica fail, the others serve) for: replicas"]
    state = _applied(desired)
    rows = [{"id": "r0", "host": "local", "url": "http://127.0.0.1:8080"},
            {"id": "r1", "host": "local", "url": "http://127.0.0.1:8081"}]
    state.resources["gateway.main"].computed = {"pid": 1, "replica_set": rows}
    assert recorded(state.resources["gateway.main"].computed, "http://x") == rows
    assert all(c.action == "no-op" for c in plan(desired, state, None).changes)
    down = Observed(True, {}, {"replica_set": rows}, repair=["replica r1 on local is not running"])
    (change,) = [c for c in plan(desired, state, {"gateway.main": down}).changes if c.address == "gateway.main"]
    assert change.action == "update" and "repair: replica r1 on local is not running" in change.notes
    assert [replica_key("main", i) for i in range(3)] == ["main", "main.r1", "main.r2"]
    assert [key_index(k) for k in ("main", "main.r1", "a.b.r12")] == [0, 1, 12]
    assert recorded({}, "http://gw:8080/") == [{"id": "r0", "host": "local", "url": "http://gw:8080"}]
