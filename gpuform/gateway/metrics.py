"""Prometheus metrics and the rolling percentiles ``/health`` and ``gpuform status`` show.

Names follow Prometheus conventions: the unit in the name (``_seconds``, ``_bytes``, ``_ratio``,
``_dollars``), ``_total`` on counters, histograms as ``_bucket``/``_sum``/``_count``. Per endpoint: jobs by
status, delay and execution histograms, queue depth, workers by state, the endpoint's condition, cold
starts and their phases, worker crashes, GPU-seconds and cost, today's spend and its cap. Per host: GPUs
used and free, and each GPU's utilisation and memory where ``nvidia-smi`` answers (:mod:`hostmetrics`).
docs/observability.md lists them with the example alerts and dashboard.

The request path only increments counters and observes histograms; gauges are set by the reconcile loop.
"""

from __future__ import annotations

import contextlib
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONDITIONS = ("OK", "NO_CAPACITY", "UNHEALTHY", "SPEND_CAP")
WORKER_STATES = ("initializing", "idle", "running", "stopping", "unhealthy")  # the states the gauge shows


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._endpoint_metrics()
        self._worker_metrics()
        self._host_metrics()
        self.windows: dict[tuple[str, str], deque[float]] = {}

    def _endpoint_metrics(self) -> None:
        reg = self.registry
        self.requests = Counter("gpuform_jobs_total", "Jobs finished, by endpoint and final status",
                                ["endpoint", "status"], registry=reg)
        self.submitted = Counter("gpuform_jobs_submitted_total", "Jobs accepted", ["endpoint"], registry=reg)
        self.delay = Histogram("gpuform_job_delay_seconds", "Time from submission to a worker taking the job",
                               ["endpoint"], buckets=DELAY_BUCKETS, registry=reg)
        self.execution = Histogram("gpuform_job_execution_seconds", "Time a worker spent on a job", ["endpoint"],
                                   buckets=DELAY_BUCKETS, registry=reg)
        self.queue_depth = Gauge("gpuform_queue_depth", "Jobs waiting for a worker", ["endpoint"], registry=reg)
        self.running = Gauge("gpuform_jobs_running", "Jobs a worker is running", ["endpoint"], registry=reg)
        self.condition = Gauge("gpuform_endpoint_condition", "1 for the endpoint's current condition (OK, "
                               "NO_CAPACITY, UNHEALTHY, SPEND_CAP), 0 for the others", ["endpoint", "condition"],
                               registry=reg)
        self.spend_today = Gauge("gpuform_spend_today_dollars", "Spend of the current UTC day", ["endpoint"],
                                 registry=reg)
        self.spend_limit = Gauge("gpuform_spend_limit_per_day_dollars", "The endpoint's daily spending cap "
                                 "(absent without one)", ["endpoint"], registry=reg)

    def _worker_metrics(self) -> None:
        reg = self.registry
        self.workers = Gauge("gpuform_workers", "Workers by state", ["endpoint", "state"], registry=reg)
        self.cold_starts = Counter("gpuform_cold_starts_total", "Workers started", ["endpoint"], registry=reg)
        self.cold_start = Histogram("gpuform_cold_start_seconds", "Time from start requested to worker ready",
                                    ["endpoint"], buckets=DELAY_BUCKETS, registry=reg)
        self.cold_start_phase = Histogram("gpuform_cold_start_phase_seconds", "Time from start requested to each "
                                          "phase of a cold start (process_started, ready, first_job, first_token, "
                                          "and what the worker reports)", ["endpoint", "phase"],
                                          buckets=DELAY_BUCKETS, registry=reg)
        self.crashes = Counter("gpuform_worker_crashes_total", "Workers that exited without being asked to, or "
                               "failed to start or become ready", ["endpoint"], registry=reg)
        self.gpu_seconds = Counter("gpuform_gpu_seconds_total", "Billed worker seconds times the worker's GPUs "
                                   "(a CPU worker counts as one)", ["endpoint", "gpu_type"], registry=reg)
        self.cost = Counter("gpuform_cost_dollars_total", "Billed cost at the pool's price per GPU-second",
                            ["endpoint", "gpu_type"], registry=reg)

    def _host_metrics(self) -> None:
        reg = self.registry
        self.host_up = Gauge("gpuform_host_up", "1 when the host answered its last inventory", ["pool", "host"],
                             registry=reg)
        self.host_gpus = Gauge("gpuform_host_gpus", "GPUs of a host, used by workers or free",
                               ["pool", "host", "gpu_type", "state"], registry=reg)
        self.gpu_utilization = Gauge("gpuform_gpu_utilization_ratio", "GPU utilisation (0-1) from nvidia-smi",
                                     ["pool", "host", "gpu", "gpu_type"], registry=reg)
        self.gpu_memory_used = Gauge("gpuform_gpu_memory_used_bytes", "GPU memory in use, from nvidia-smi",
                                     ["pool", "host", "gpu", "gpu_type"], registry=reg)
        self.gpu_memory_total = Gauge("gpuform_gpu_memory_total_bytes", "GPU memory, from nvidia-smi",
                                      ["pool", "host", "gpu", "gpu_type"], registry=reg)

    def billed(self, endpoint: str, gpu_type: str, gpus: int, seconds: float, cost: float | None) -> None:
        """A ledger accrual: ``seconds`` of a worker with ``gpus`` GPUs, costing ``cost`` (None: unpriced)."""
        self.gpu_seconds.labels(endpoint, gpu_type).inc(seconds * max(1, gpus))
        if cost is not None:
            self.cost.labels(endpoint, gpu_type).inc(cost)

    def set_condition(self, endpoint: str, current: str) -> None:
        for condition in CONDITIONS:
            self.condition.labels(endpoint, condition).set(1 if condition == current else 0)

    def forget_endpoint(self, endpoint: str) -> None:
        """Drop a removed endpoint's gauges (its counters and histograms stay until the gateway restarts, so
        ``rate`` over them stays right)."""
        removals: list[tuple[Gauge, tuple[str, ...]]] = [(self.workers, (endpoint, s)) for s in WORKER_STATES]
        removals += [(self.condition, (endpoint, condition)) for condition in CONDITIONS]
        removals += [(gauge, (endpoint,)) for gauge in (self.queue_depth, self.running, self.spend_today,
                                                        self.spend_limit)]
        for gauge, labels in removals:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def observe(self, endpoint: str, kind: str, seconds: float) -> None:
        """Record a delay/execution/cold-start time for the rolling percentiles."""
        window = self.windows.setdefault((endpoint, kind), deque(maxlen=2000))
        window.append(seconds)

    def percentiles(self, endpoint: str, kind: str) -> dict[str, float | None]:
        values = sorted(self.windows.get((endpoint, kind), ()))
        if not values:
            return {"p50": None, "p90": None, "p99": None, "count": 0}

        def at(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))]

        return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "count": len(values)}
