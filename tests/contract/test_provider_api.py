"""The provider contract at the level of its operations, one suite for every provider: what docs/providers.md
promises a provider author. (tests/contract/test_provider_contract.py runs the same providers end to end,
through apply, a gateway and real hosts.)"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuform.provider import (
    CAPABILITY_PROTOCOLS,
    Capability,
    GatewayHost,
    Provider,
    ProviderContext,
    VolumeHost,
    VolumeSpec,
    WorkerLaunch,
    make_provider,
    registry,
)
from gpuform.spec import EndpointSpec
from gpuform.util.manifests import scan_source

POOLS = {
    "fake": {"provider": "fake", "hosts": [{"name": "f1", "gpus": ["H100-80GB"]}, {"name": "f2"}]},
    "local": {"provider": "local"},
}
SLEEPER = ["python", "-c", "import time; time.sleep(120)"]


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(registry()))
def test_declared_capabilities_match_what_the_provider_implements(name: str) -> None:
    spec = registry()[name]
    factory = spec.factory()
    for capability, protocol in CAPABILITY_PROTOCOLS.items():
        declared = capability in spec.capabilities
        members = [m for m in dir(protocol) if not m.startswith("_")]
        implemented = all(callable(getattr(factory, m, None)) for m in members)
        assert declared == implemented, f"{name}: declares {capability}={declared}, implements it: {implemented}"
    assert Capability.WORKERS in spec.capabilities


@pytest.fixture(params=[pytest.param("fake", marks=pytest.mark.unit),
                        pytest.param("local", marks=pytest.mark.integration)])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Provider, ProviderContext]]:
    config_dir = tmp_path / "cfg"
    (config_dir / "model").mkdir(parents=True)
    (config_dir / "model" / "weights.bin").write_bytes(os.urandom(50_000))
    (config_dir / "model" / "config.json").write_text("{}")
    ctx = ProviderContext(lineage=str(uuid.uuid4()), state_dir=tmp_path / "state", config_dir=config_dir)
    made = make_provider("p", POOLS[request.param], ctx)
    yield request.param, made, ctx
    made.delete_pool()
    made.close()


def _launch(ctx: ProviderContext, worker_id: str, endpoint: str = "ep") -> WorkerLaunch:
    return WorkerLaunch(worker_id=worker_id, endpoint=endpoint, lineage=ctx.lineage, template="custom", image=None,
                        command=SLEEPER, python=None, workdir=None, env={"GPUFORM_TEST": "1"}, gpu_types=["cpu"],
                        gpu_count=1)


def test_pools_volumes_endpoints_and_workers_keep_the_contract(
        provider: tuple[str, Provider, ProviderContext], tmp_path: Path) -> None:
    name, p, ctx = provider
    assert p.create_pool() == p.create_pool(), "create_pool is idempotent"
    assert p.read_pool() is not None
    assert any(h.reachable for h in p.inventory())

    if isinstance(p, VolumeHost):
        volume = VolumeSpec(pool="p", path=str(tmp_path / "staged"), source="model")
        assert p.read_volume("w", volume) is None, "nothing staged yet"
        p.stage_volume("w", volume)
        p.stage_volume("w", volume)
        seen = p.read_volume("w", volume)
        assert seen is not None and seen.attributes["content"] == scan_source(ctx.config_dir / "model").digest
        p.remove_volume("w", volume)
        p.remove_volume("w", volume)
        assert p.read_volume("w", volume) is None, "removed, idempotently"

    spec = EndpointSpec.model_validate({"pool": "p", "gateway": "g", "worker": {"command": SLEEPER}})
    p.prepare_endpoint("ep", spec)
    assert p.read_endpoint("ep", spec).repair == []

    info = p.start_worker(_launch(ctx, "ep-w1"))
    assert info.state == "running" and info.gpu_type == "cpu"
    assert [(w.worker_id, w.state) for w in p.list_workers("ep")] == [("ep-w1", "running")]
    assert p.list_workers("other") == []
    again = make_provider("p", POOLS[name], ctx)  # another process of the same lineage finds it (adoption)
    assert [w.worker_id for w in again.list_workers("ep")] == ["ep-w1"]
    assert isinstance(p.worker_logs(info, 10), str)
    p.stop_worker(info, 2.0)
    p.stop_worker(info, 2.0)
    assert all(w.state != "running" for w in p.list_workers("ep")), "stopped, idempotently"

    p.start_worker(_launch(ctx, "ep-w2"))
    p.remove_endpoint("ep", spec)
    assert all(w.state != "running" for w in p.list_workers()), "removing an endpoint stops its workers"
    p.start_worker(_launch(ctx, "ep-w3", endpoint="ep2"))
    p.delete_pool()
    assert all(w.state != "running" for w in p.list_workers()), "deleting a pool stops whatever is left"
    assert isinstance(p, GatewayHost) == (Capability.GATEWAY in registry()[name].capabilities)
