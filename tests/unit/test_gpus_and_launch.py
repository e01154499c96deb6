"""GPU inventory parsing, placement by type priority, and the launch objects providers build."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from gpuform.provider import GpuInfo, HostInventory
from gpuform.providers.baremetal.provider import env_file_text, systemd_run_argv, unit_file_text
from gpuform.providers.common.gpus import gpu_type, parse_nvidia_smi, place
from gpuform.providers.docker.provider import device_requests, env_text, reusable
from tests.conftest import REPO

pytestmark = pytest.mark.unit
FIXTURES = REPO / "tests" / "fixtures" / "hosts" / "nvidia-smi"


@pytest.mark.parametrize(("name", "mib", "expected"), [
    ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB"), ("NVIDIA H100 PCIe", 81559, "H100-80GB"),
    ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"), ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
    ("NVIDIA H200", 143771, "H200-141GB"), ("NVIDIA GeForce RTX 4090", 24564, "RTX4090-24GB"),
    ("NVIDIA L40S", 46068, "L40S-48GB"), ("NVIDIA L4", 23034, "L4-24GB"), ("Tesla T4", 15360, "T4-16GB"),
])
def test_gpu_type_names(name: str, mib: int, expected: str) -> None:
    assert gpu_type(name, mib) == expected


def test_recorded_nvidia_smi_outputs_parse() -> None:
    h100 = parse_nvidia_smi((FIXTURES / "h100-sxm-x8.csv").read_text())
    assert [g.index for g in h100] == list(range(8)) and {g.type for g in h100} == {"H100-80GB"}
    assert h100[0].memory_mib == 81559 and h100[0].uuid.startswith("GPU-")
    a100 = parse_nvidia_smi((FIXTURES / "a100-sxm4-80gb-x4.csv").read_text())
    assert {g.type for g in a100} == {"A100-80GB"} and len(a100) == 4
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi("garbage")


def _host(name: str, types: list[str], reachable: bool = True, cordoned: bool = False) -> HostInventory:
    gpus = tuple(GpuInfo(i, t, t, 81920, f"GPU-{name}-{i}") for i, t in enumerate(types))
    return HostInventory(name, reachable, gpus=gpus, cordoned=cordoned)


def test_placement_follows_type_priority_and_falls_back() -> None:
    hosts = [_host("a", ["H100-80GB", "H100-80GB"]), _host("b", ["A100-80GB"] * 4)]
    assert place(hosts, {}, {}, ["H100-80GB", "A100-80GB"], 2).indices == (0, 1)
    spot = place(hosts, {"a": {0}}, {}, ["H100-80GB", "A100-80GB"], 2)
    assert spot is not None and (spot.host, spot.gpu_type, spot.indices) == ("b", "A100-80GB", (0, 1))
    assert place(hosts, {"a": {0, 1}, "b": {0, 1, 2}}, {}, ["H100-80GB", "A100-80GB"], 2) is None


def test_placement_skips_unreachable_and_cordoned_hosts_and_spreads_cpu_workers() -> None:
    hosts = [_host("a", ["H100-80GB"], reachable=False), _host("b", ["H100-80GB"], cordoned=True),
             _host("c", []), _host("d", [])]
    assert place(hosts, {}, {}, ["H100-80GB"], 1) is None
    spot = place(hosts, {}, {"c": 2, "d": 1}, ["cpu"], 1)
    assert spot is not None and spot.host == "d" and spot.indices == ()


def test_placement_prefers_hosts_with_a_kept_container_and_its_gpus() -> None:
    hosts = [_host("a", ["H100-80GB"] * 2), _host("b", ["H100-80GB"] * 2)]
    spot = place(hosts, {}, {}, ["H100-80GB"], 1, prefer={"b"})
    assert spot is not None and spot.host == "b"
    spot = place(hosts, {"b": {0, 1}}, {}, ["H100-80GB"], 1, prefer={"b"})  # the kept one's host is full
    assert spot is not None and spot.host == "a"
    spot = place([_host("c", []), _host("d", [])], {}, {}, ["cpu"], 1, prefer={"d"})
    assert spot is not None and spot.host == "d"
    spot = place([_host("c", []), _host("d", [])], {}, {"d": 1}, ["cpu"], 1, prefer={"d"})  # least busy first
    assert spot is not None and spot.host == "c"
    kept = [_kept("A100-80GB", [1]), _kept("H100-80GB", [0, 1]), _kept("H100-80GB", [1])]
    assert reusable(kept, "H100-80GB", 1, {0}) is kept[2]
    assert reusable(kept, "H100-80GB", 2, set()) is kept[1]
    assert reusable(kept, "H100-80GB", 1, {1}) is None
    assert reusable([_kept("cpu", [])], "cpu", 0, set()) is not None


def _kept(gpu_type: str, indices: list[int]) -> Any:
    """A kept container as the docker SDK lists it: what placement reads is its labels."""
    return SimpleNamespace(labels={"gpuform.gpu_type": gpu_type, "gpuform.gpu_indices": json.dumps(indices)})


def test_docker_device_requests_name_gpus_by_index() -> None:
    (request,) = device_requests((2, 3))
    assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["2", "3"]
    assert (request["Capabilities"] == [["gpu"]] and "Count" not in request) or request["Count"] in (0, None)
    assert device_requests(()) == []


def test_systemd_units_take_the_environment_from_a_file_not_argv() -> None:
    argv = systemd_run_argv("gpuform-w-x1", ["/v/bin/python", "-m", "gpuform.workers.echo"], "/d/x1.env", "/d")
    assert argv[:3] == ["systemd-run", "--unit", "gpuform-w-x1"]
    assert "--property" in argv and "EnvironmentFile=/d/x1.env" in argv and "Restart=no" in argv
    assert argv[argv.index("--") + 1:] == ["/v/bin/python", "-m", "gpuform.workers.echo"]
    assert not any(a.startswith("--setenv") for a in argv)
    assert "Restart=always" in systemd_run_argv("gpuform-gateway-main", ["x"], "/e", "/d", restart="always")
    text = env_file_text({"RUNPOD_AI_API_KEY": "tok'en", "B": "x y"})
    assert text == "B='x y'\nRUNPOD_AI_API_KEY='tok'\"'\"'en'\n" and env_text({"A": "1"}) == "A=1\n"


def test_the_gateway_unit_is_enabled_restarts_always_and_quotes_its_command_for_systemd() -> None:
    text = unit_file_text("gpuform gateway.main", ["/v/bin/python", "-m", "gpuform.gateway", "--config",
                                                   "/d/my gw/config.json", "100%$x"], "/d/gateway.env", "/d")
    lines = text.splitlines()
    assert 'ExecStart=/v/bin/python -m gpuform.gateway --config "/d/my gw/config.json" "100%%$$x"' in lines
    assert {"Restart=always", "EnvironmentFile=/d/gateway.env", "WorkingDirectory=/d"} <= set(lines)
    assert lines[-1] == "WantedBy=multi-user.target", "without [Install] `systemctl enable` cannot start it at boot"


def test_docker_workers_mount_the_whole_volume_and_find_the_model_at_its_path_inside() -> None:
    """A model at ``model.path`` inside its volume: the container sees the volume's root at /runpod-volume (as
    on RunPod) and GPUFORM_MODEL_PATH points at the model inside it (it once named a directory that did not
    exist in the container: the mount was the model's directory, the path the model's path below it)."""
    from gpuform.gateway.fleet import _model_env
    from gpuform.provider import WorkerLaunch
    from gpuform.providers.docker.provider import volume_root
    from tests.gateway_harness import endpoint_spec

    spec = endpoint_spec(model={"name": "tiny", "path": "models/tiny"}, volume_path="/srv/vol/models/tiny")
    env = _model_env(spec)
    assert env["GPUFORM_MODEL_PATH_IN_CONTAINER"] == "/runpod-volume/models/tiny"
    launch = WorkerLaunch("w1", "ep", "l", "echo", None, [], None, None, env, ["cpu"], 0, volume_path=spec.volume_path)
    assert volume_root(launch) == "/srv/vol"
    plain = endpoint_spec(model={"name": "tiny"}, volume_path="/srv/vol")
    launch = WorkerLaunch("w1", "ep", "l", "echo", None, [], None, None, _model_env(plain), ["cpu"], 0,
                          volume_path=plain.volume_path)
    assert volume_root(launch) == "/srv/vol" and _model_env(plain)["GPUFORM_MODEL_PATH_IN_CONTAINER"] == "/runpod-volume"
