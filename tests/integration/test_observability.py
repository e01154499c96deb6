"""examples/observability against the real thing: promtool checks the scrape configuration and the alert rules
(and runs their rules test); every metric the dashboard and the alerts use is one a real gateway exports; a
real Prometheus (Debian's) scrapes a real gateway with echo workers, through its metrics-only key, after a
burst of requests, and every alert expression and every panel query returns at least one series.

About 35 s: one gateway for the module (apply, a burst, destroy), Prometheus scraping every second."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO, destroy_after_test, free_port, local_config, run_gpuform, write_config
from tests.helpers import KEY, Deployment, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

EXAMPLE = REPO / "examples" / "observability" / "prometheus"
DASHBOARD = REPO / "examples" / "observability" / "grafana" / "gpuform.json"
METRICS_KEY = "prometheus-scrape-key"
FAKE_SMI = REPO / ".ci" / "setup" / "fake-nvidia-smi.py"
GPUS = REPO / "tests" / "fixtures" / "hosts" / "nvidia-smi" / "a100-sxm4-80gb-x4.csv"
# Grafana's variables, as Grafana would fill them in for "All" endpoints over a short range
GRAFANA = {"$endpoint": ".*", "$__rate_interval": "30s", "$__range": "5m", "${datasource}": ""}
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "le",
               "sum", "max", "min", "avg", "count", "rate", "increase", "histogram_quantile", "label_values", "up"}


def tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    assert found, f"{name} is missing: install Debian's prometheus package (.ci/setup/packages.sh)"
    return found


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((EXAMPLE / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panel_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(queries) >= 15 and variables
    return queries + variables


def inner(expr: str) -> str:
    """An alert's query without its threshold (``A > 0.9`` -> ``A``): series exist even when nothing fires."""
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+\s*$", "", " ".join(expr.split()))


def grafana(expr: str) -> str:
    for var, value in GRAFANA.items():
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {n for n in names if n.startswith("gpuform_")} | ({"up"} if re.search(r"\bup\{", expr) else set())


def test_promtool_checks_the_scrape_configuration_and_the_rules(tmp_path: Path) -> None:
    promtool = tool("promtool")
    shutil.copy(EXAMPLE / "alerts.yml", tmp_path / "alerts.yml")
    key_file = tmp_path / "metrics-key"
    key_file.write_text(METRICS_KEY)
    config = (EXAMPLE / "prometheus.yml").read_text()
    assert "/etc/prometheus/gpuform-metrics-key" in config and METRICS_KEY not in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/gpuform-metrics-key", str(key_file)))
    for args in (["check", "config", str(tmp_path / "prometheus.yml")],
                 ["check", "rules", str(EXAMPLE / "alerts.yml")],
                 ["test", "rules", str(EXAMPLE / "alerts_test.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    names = {rule["alert"] for rule in alert_rules()}
    assert {"GpuformEndpointUnhealthy", "GpuformDelayP95AboveSLO", "GpuformSpendNearCap",
            "GpuformWorkersCrashLooping", "GpuformGatewayDown"} <= names
    tested = (EXAMPLE / "alerts_test.yml").read_text()
    assert all(f"alertname: {name}" in tested for name in names), "every alert has a case in the rules test"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A gateway on the local pool with GPUs from the nvidia-smi stand-in, an echo endpoint with a spending cap,
    a metrics-only key, and a burst of requests served."""
    workdir = tmp_path_factory.mktemp("observability") / "cfg"
    workdir.mkdir()
    smi = workdir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nGPUFORM_FAKE_NVIDIA_SMI_CSV={GPUS} exec python3 {FAKE_SMI} \"$@\"\n")
    smi.chmod(0o755)
    deployment = Deployment(workdir, free_port())
    text = local_config(deployment.port, "", textwrap.dedent("""
        endpoints:
          echo:
            pool: here
            worker: {template: echo}
            gpu: {types: [A100-80GB], count: 1}
            spend_limit_per_day: 100
            scaling: {min_workers: 0, max_workers: 2, idle_timeout: 60s}
        """))
    text = text.replace("provider: local\n", f"provider: local\n    nvidia_smi: {smi}\n")
    text = text.replace("price_per_gpu_second: {cpu: 0.001}", "price_per_gpu_second: {A100-80GB: 0.001}")
    text = text.replace("api_keys: {test: test-key}",
                        f"api_keys: {{test: test-key, prometheus: {{key: {METRICS_KEY}, scope: metrics}}}}")
    text = text.replace("timings: {lease_timeout:", "timings: {host_metrics_interval: 1s, lease_timeout:")
    write_config(workdir, text)
    result = run_gpuform("-C", str(workdir), "apply", "--auto-approve")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        burst(deployment)
        yield deployment
    finally:
        destroy_after_test(workdir)


def burst(deployment: Deployment) -> None:
    with deployment.http() as http:
        for wave in range(2):
            for i in range(8):
                resp = http.post("/v2/echo/runsync", json={"input": {"wave": wave, "i": i}})
                assert resp.json()["status"] == "COMPLETED", resp.text
            time.sleep(1.5)


def exported(deployment: Deployment) -> set[str]:
    with deployment.http(METRICS_KEY) as http:
        text = http.get("/metrics").text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_in_the_dashboard_and_alerts_is_one_the_gateway_exports(gateway: Deployment) -> None:
    names = exported(gateway)
    assert {"gpuform_gpu_utilization_ratio", "gpuform_host_gpus", "gpuform_cold_start_phase_seconds_bucket"} <= names
    used = set().union(*(metric_names(q) for q in panel_queries() + [r["expr"] for r in alert_rules()]))
    assert len(used) >= 15
    unknown = sorted(used - names - {"up"})
    assert not unknown, f"the dashboard or alerts use metrics the gateway does not export: {unknown}"


@pytest.fixture(scope="module")
def prometheus(gateway: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Prometheus scraping the gateway every second with the example's configuration and rules."""
    binary = tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "metrics-key").write_text(METRICS_KEY)
    config = yaml.safe_load((EXAMPLE / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(EXAMPLE / "alerts.yml")]
    job = config["scrape_configs"][0]
    job["authorization"]["credentials_file"] = str(work / "metrics-key")
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{gateway.port}"]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(work / "prometheus.log", "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(url, "/-/ready") is not None, 30, what="Prometheus to be ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str, path: str, **params: str) -> Any:
    try:
        resp = httpx.get(url + path, params=params, timeout=10, trust_env=False)
    except httpx.TransportError:
        return None
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text


def query(url: str, expr: str) -> list[Any]:
    answer = _get(url, "/api/v1/query", query=expr)
    assert answer["status"] == "success", (expr, answer)
    result: list[Any] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_the_gateway_and_every_query_has_series(gateway: Deployment, prometheus: str) -> None:
    up = wait_for(lambda: query(prometheus, 'up{job="gpuform-gateway"}'), 30, what="a first scrape")
    assert up[0]["value"][1] == "1", "scraped with the metrics-only key"
    with gateway.http() as http:  # more traffic after the first scrapes: rates see an increase
        for i in range(6):
            assert http.post("/v2/echo/runsync", json={"input": {"late": i}}).json()["status"] == "COMPLETED"
    time.sleep(3)  # a few more scrapes
    alerts = {rule["alert"]: inner(rule["expr"]) for rule in alert_rules()}
    panels = [grafana(q) for q in panel_queries() if not q.startswith("label_values")]
    empty = [expr for expr in [*alerts.values(), *panels] if not query(prometheus, expr)]
    assert not empty, "queries without a series:\n" + "\n".join(empty)
    values = {r["metric"].get("endpoint"): float(r["value"][1]) for r in query(prometheus, alerts["GpuformSpendNearCap"])}
    assert 0 < values["echo"] < 0.9, "spend is a small share of the cap"
    completed = query(prometheus, 'sum(gpuform_jobs_total{endpoint="echo",status="COMPLETED"})')
    assert float(completed[0]["value"][1]) >= 22
    rules = _get(prometheus, "/api/v1/rules")["data"]["groups"][0]["rules"]
    assert {r["name"]: r["health"] for r in rules} == {name: "ok" for name in alerts}
    assert all(r["state"] == "inactive" for r in rules), "nothing is wrong with this gateway"
    with gateway.http(KEY) as http:
        assert http.get("/metrics").status_code == 200  # a client key reads its own endpoints' series
