"""A gateway's unit and files are keyed by lineage, so two workspaces (or deployments) on one host never stop,
adopt or share each other's gateway: the baremetal unit (``gpuform-gateway-NAME`` from an earlier gpuform is
still found by refresh and stopped by destroy or a restart, which migrates it, but only by its own deployment),
and the gateway directory in a local pool's configured ``data_dir``."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gpuform.provider import ProviderContext
from gpuform.providers.baremetal import BaremetalPool
from gpuform.providers.baremetal.provider import BaremetalProvider
from gpuform.providers.common.ssh import Result
from gpuform.providers.local import LocalPool
from gpuform.providers.local.provider import LocalProvider

pytestmark = pytest.mark.unit
DEV, PROD = "d0d0d0d0-0000-4000-8000-000000000001", "c1c1c1c1-0000-4000-8000-000000000002"


@dataclass
class FakeSystemd:
    """One host's systemd: unit -> [active, working directory]; every command run is recorded."""

    units: dict[str, list[Any]] = field(default_factory=dict)
    ran: list[list[str]] = field(default_factory=list)

    def run(self, argv: list[str], **_: Any) -> Result:
        self.ran.append(argv)
        unit = self.units.get(argv[-1], [False, ""])
        if argv[:2] == ["systemctl", "is-active"]:
            return Result(0 if unit[0] else 3, b"active\n" if unit[0] else b"inactive\n", b"")
        if argv[:2] == ["systemctl", "show"]:
            return Result(0, f"{unit[1]}\n".encode(), b"")
        if argv[:2] == ["systemctl", "stop"] and argv[-1] in self.units:
            self.units[argv[-1]][0] = False
        return Result(0, b"", b"")


@dataclass
class FakeHosts:
    conn_: FakeSystemd
    hosts: list[Any] = field(default_factory=lambda: [type("H", (), {"name": "h1"})()])

    def conn(self, host: Any) -> FakeSystemd:
        return self.conn_


def provider(lineage: str, host: FakeSystemd, tmp_path: Path, systemd: bool = True) -> BaremetalProvider:
    pool = BaremetalPool.model_validate({"provider": "baremetal", "hosts": [{"address": "10.0.0.1", "name": "h1"}]})
    made = BaremetalProvider("p", pool, ProviderContext(lineage, tmp_path, tmp_path))
    made.hosts = FakeHosts(host)  # type: ignore[assignment]
    made._systemd["h1"] = systemd
    return made


def test_two_workspaces_on_one_host_have_their_own_gateway_units(tmp_path: Path) -> None:
    host = FakeSystemd()
    dev, prod = provider(DEV, host, tmp_path), provider(PROD, host, tmp_path)
    assert dev._unit("main") == "gpuform-gateway-d0d0d0d0-main" != prod._unit("main")
    assert dev._gdir("main") != prod._gdir("main")
    host.units[prod._unit("main")] = [True, prod._gdir("main")]
    assert dev.read_gateway("main") is None, "prod's gateway is not dev's"
    dev.stop_gateway("main", remove_data=True)
    assert host.units[prod._unit("main")][0], "stopping dev's gateway left prod's running"
    assert prod.read_gateway("main") == {"host": "h1", "unit": "gpuform-gateway-c1c1c1c1-main"}


def test_a_gateway_started_under_the_old_unit_name_is_found_and_stopped_by_its_own_deployment(
        tmp_path: Path) -> None:
    host = FakeSystemd()
    dev, prod = provider(DEV, host, tmp_path), provider(PROD, host, tmp_path)
    host.units["gpuform-gateway-main"] = [True, prod._gdir("main")]  # started by an earlier gpuform for prod
    assert prod.read_gateway("main") == {"host": "h1", "unit": "gpuform-gateway-main"}
    assert dev.read_gateway("main") is None, "the old unit runs from prod's directory: dev must not adopt it"
    dev.stop_gateway("main", remove_data=False)
    assert host.units["gpuform-gateway-main"][0], "dev stopped prod's gateway"
    prod.stop_gateway("main", remove_data=False)
    assert not host.units["gpuform-gateway-main"][0]
    assert ["systemctl", "stop", "gpuform-gateway-c1c1c1c1-main"] in host.ran


def test_without_systemd_the_old_record_in_the_lineage_directory_is_the_deployments_own(tmp_path: Path) -> None:
    prod = provider(PROD, FakeSystemd(), tmp_path, systemd=False)
    records: dict[str, bool] = {"gpuform-gateway-main": True}  # an agent record written by an earlier gpuform
    calls: list[tuple[str, dict[str, Any]]] = []

    def agent(host: Any, command: str, request: dict[str, Any]) -> dict[str, Any]:
        calls.append((command, request))
        assert request["records"] == posixpath.join(prod.data, "workers") and "lineage-c1c1c1c1" in prod.data
        if command == "list":
            unit = request["match"]["id"]
            return {"records": [{"id": unit, "pid": 42, "alive": True}] if records.get(unit) else []}
        if command == "stop":
            records.pop(request["id"], None)
        return {}

    prod._agent = agent  # type: ignore[method-assign]
    assert prod.read_gateway("main") == {"host": "h1", "unit": "gpuform-gateway-main", "pid": 42}
    prod.stop_gateway("main", remove_data=False)
    assert not records and ("stop", {"records": posixpath.join(prod.data, "workers"), "id": "gpuform-gateway-main",
                                     "grace": 30}) in calls


def test_a_local_pools_configured_data_dir_holds_one_gateway_directory_per_lineage(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    pool = LocalPool.model_validate({"provider": "local", "data_dir": str(shared)})
    dev = LocalProvider("p", pool, ProviderContext(DEV, tmp_path / "dev", tmp_path))
    prod = LocalProvider("p", pool, ProviderContext(PROD, tmp_path / "prod", tmp_path))
    assert dev._gateway_dir("main") == shared / "lineage-d0d0d0d0" / "gateways" / "main"
    assert prod._gateway_dir("main") == shared / "lineage-c1c1c1c1" / "gateways" / "main"
    legacy = shared / "gateways" / "main"  # where an earlier gpuform ran prod's gateway
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_text(json.dumps({"lineage": PROD}))
    assert prod._gateway_dir("main") == legacy, "the old gateway (and its queue) is still prod's"
    assert dev._gateway_dir("main") == shared / "lineage-d0d0d0d0" / "gateways" / "main"
    default = LocalProvider("p", LocalPool.model_validate({"provider": "local"}),
                            ProviderContext(DEV, tmp_path / "dev", tmp_path))
    assert default._gateway_dir("main") == tmp_path / "dev" / "local" / "p" / "gateways" / "main"
