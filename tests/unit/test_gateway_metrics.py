"""/metrics: what the gateway exports per endpoint and per host, and who may read it (a ``scope: metrics`` key
reads every endpoint's series and nothing else of the gateway)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gpuform.config.schema import ApiKey
from gpuform.gateway.metrics import Metrics
from gpuform.provider import GpuUsage
from gpuform.util.hashing import hash_secret
from tests.gateway_harness import LINEAGE, Harness, endpoint_spec, runtime_config, scenario

pytestmark = pytest.mark.unit
METRICS_KEY = "prometheus-key"


def _config() -> Any:
    config = runtime_config(prices={"H100-80GB": 0.002})
    keys = dict(config.gateway.api_keys)
    keys["prom"] = ApiKey(key=hash_secret(METRICS_KEY, LINEAGE), scope="metrics")
    keys["app"] = ApiKey(key=str(keys["app"]))
    return config.model_copy(update={"gateway": config.gateway.model_copy(update={"api_keys": keys})})


def _endpoints() -> dict[str, Any]:
    return {"ep": endpoint_spec(api_keys=["app"], gpu={"types": ["H100-80GB"], "count": 2},
                                spend_limit_per_day=50.0),
            "private": endpoint_spec(api_keys=["other"])}


def _value(text: str, series: str) -> float:
    match = re.search("^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in /metrics"
    return float(match.group(1))


def test_a_metrics_key_reads_every_endpoints_metrics_and_nothing_else() -> None:
    async def body(h: Harness) -> None:
        await h.tick()
        metrics = await h.call("GET", "/metrics", METRICS_KEY)
        assert metrics.status_code == 200
        assert 'endpoint="ep"' in metrics.text and 'endpoint="private"' in metrics.text
        assert (await h.call("GET", "/openapi.json", METRICS_KEY)).status_code == 200
        for method, path in [("POST", "/v2/ep/run"), ("POST", "/v2/ep/runsync"), ("GET", "/v2/ep/health"),
                             ("GET", "/v2/ep/status/x"), ("POST", "/v2/ep/cancel/x"), ("POST", "/v2/ep/purge-queue"),
                             ("GET", "/v2/ep/requests"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                             ("POST", "/v2/ep/openai/v1/completions")]:
            resp = await h.call(method, path, METRICS_KEY, json={"input": {}})
            assert resp.status_code == 403, (path, resp.status_code, resp.text)
            assert "metrics key" in resp.text
        for method, path in [("GET", "/admin/status"), ("GET", "/admin/endpoints"), ("GET", "/admin/requests"),
                             ("GET", "/v2/ep/job-take/w1")]:
            assert (await h.call(method, path, METRICS_KEY)).status_code == 401, path

    scenario(body, config=_config(), endpoints=_endpoints())


def test_a_client_key_sees_only_its_endpoints_and_no_hosts() -> None:
    async def body(h: Harness) -> None:
        await h.tick()
        await h.runtime.hosts.collect("gpu")
        text = (await h.call("GET", "/metrics")).text
        assert 'endpoint="ep"' in text and 'endpoint="private"' not in text
        assert "gpuform_host_gpus{" not in text and "gpuform_host_up{" not in text
        admin = (await h.call("GET", "/metrics", "admin-key")).text
        assert 'gpuform_host_gpus{gpu_type="H100-80GB",host="h1",pool="gpu",state="free"} 2.0' in admin

    scenario(body, config=_config(), endpoints=_endpoints())


def test_metrics_follow_jobs_cold_starts_billing_and_conditions() -> None:
    async def body(h: Harness) -> None:
        await h.run({"n": 1})
        await h.settle()
        worker = h.worker()
        h.clock.advance(3)
        await worker.serve_one()
        await h.tick(1)
        await h.runtime.hosts.collect("gpu")
        text = (await h.call("GET", "/metrics", METRICS_KEY)).text
        assert _value(text, 'gpuform_jobs_total{endpoint="ep",status="COMPLETED"}') == 1
        assert _value(text, 'gpuform_job_delay_seconds_count{endpoint="ep"}') == 1
        assert _value(text, 'gpuform_job_delay_seconds_sum{endpoint="ep"}') == pytest.approx(3)
        assert _value(text, 'gpuform_job_execution_seconds_bucket{endpoint="ep",le="+Inf"}') == 1
        assert _value(text, 'gpuform_cold_starts_total{endpoint="ep"}') == 1
        for phase in ("process_started", "ready", "first_job", "first_token"):
            assert _value(text, f'gpuform_cold_start_phase_seconds_count{{endpoint="ep",phase="{phase}"}}') == 1
        assert _value(text, 'gpuform_cold_start_phase_seconds_sum{endpoint="ep",phase="ready"}') == pytest.approx(3)
        # 4 s billed (from the start request to this tick) x 2 GPUs, at 0.002 per GPU-second
        assert _value(text, 'gpuform_gpu_seconds_total{endpoint="ep",gpu_type="H100-80GB"}') == pytest.approx(8)
        assert _value(text, 'gpuform_cost_dollars_total{endpoint="ep",gpu_type="H100-80GB"}') == pytest.approx(0.016)
        await h.tick()  # today's spend is the one the tick's decision read (before that tick's accrual)
        text = (await h.call("GET", "/metrics", METRICS_KEY)).text
        assert _value(text, 'gpuform_spend_today_dollars{endpoint="ep"}') == pytest.approx(0.016)
        assert _value(text, 'gpuform_spend_limit_per_day_dollars{endpoint="ep"}') == 50
        assert _value(text, 'gpuform_workers{endpoint="ep",state="idle"}') == 1
        assert _value(text, 'gpuform_queue_depth{endpoint="ep"}') == 0
        assert _value(text, 'gpuform_endpoint_condition{condition="OK",endpoint="ep"}') == 1
        assert _value(text, 'gpuform_endpoint_condition{condition="UNHEALTHY",endpoint="ep"}') == 0
        assert _value(text, 'gpuform_worker_crashes_total{endpoint="ep"}') == 0
        assert _value(text, 'gpuform_host_gpus{gpu_type="H100-80GB",host="h1",pool="gpu",state="used"}') == 2
        assert _value(text, 'gpuform_host_gpus{gpu_type="H100-80GB",host="h1",pool="gpu",state="free"}') == 0

        h.world.crash(worker.id, 3, "killed")
        await h.tick(1)
        await h.tick(1)
        text = (await h.call("GET", "/metrics", METRICS_KEY)).text
        assert _value(text, 'gpuform_worker_crashes_total{endpoint="ep"}') == 1

    scenario(body, config=_config(), endpoints=_endpoints())


def test_gpu_utilisation_and_memory_come_from_nvidia_smi_where_it_answers() -> None:
    from gpuform.gateway.hostmetrics import HostMonitor
    from gpuform.provider import GpuInfo, HostInventory
    from gpuform.providers.common.gpus import parse_gpu_usage

    usage = parse_gpu_usage("0, 37, 1024, 81920\n1, [N/A], [N/A], 81920\nnot a line\n", "gpu1")
    assert usage == [GpuUsage("gpu1", 0, 0.37, 1024, 81920), GpuUsage("gpu1", 1, None, None, 81920)]
    metrics = Metrics()
    monitor = HostMonitor([], lambda pool: None, _NoWorkers(), metrics, 15)  # type: ignore[arg-type]
    gpus = tuple(GpuInfo(i, "A100-80GB", "NVIDIA A100", 81920, f"u{i}") for i in range(2))
    monitor.record("lab", [HostInventory("gpu1", True, gpus=gpus), HostInventory("cpu1", True)], usage)
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    labels = 'gpu="0",gpu_type="A100-80GB",host="gpu1",pool="lab"'
    assert _value(text, f"gpuform_gpu_utilization_ratio{{{labels}}}") == 0.37
    assert _value(text, f"gpuform_gpu_memory_used_bytes{{{labels}}}") == 1024 * 2**20
    assert 'gpuform_gpu_utilization_ratio{gpu="1"' not in text, "a value the driver does not report is left out"
    assert _value(text, 'gpuform_host_up{host="cpu1",pool="lab"}') == 1
    assert 'host="cpu1",pool="lab",state=' not in text, "a CPU host has no GPU series"


class _NoWorkers:
    records: dict[str, Any] = {}


def test_a_removed_endpoint_leaves_no_gauges_behind() -> None:
    async def body(h: Harness) -> None:
        await h.tick()
        before = (await h.call("GET", "/metrics", METRICS_KEY)).text
        assert 'gpuform_queue_depth{endpoint="private"}' in before
        resp = await h.call("DELETE", "/admin/endpoints/private", "admin-key", params={"drain_timeout": "0"})
        assert resp.status_code == 200, resp.text
        await h.tick()
        after = (await h.call("GET", "/metrics", METRICS_KEY)).text
        gauges = ("gpuform_queue_depth", "gpuform_workers", "gpuform_endpoint_condition", "gpuform_jobs_running")
        assert not [line for line in after.splitlines() if line.startswith(gauges) and 'endpoint="private"' in line]
        assert 'gpuform_queue_depth{endpoint="ep"}' in after

    scenario(body, config=_config(), endpoints=_endpoints())
