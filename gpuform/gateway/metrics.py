"""Prometheus metrics and the rolling percentiles ``/health`` and ``gpuform status`` show."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gpuform_jobs_total", "Jobs finished, by endpoint and final status",
                                ["endpoint", "status"], registry=self.registry)
        self.submitted = Counter("gpuform_jobs_submitted_total", "Jobs accepted", ["endpoint"], registry=self.registry)
        self.delay = Histogram("gpuform_job_delay_seconds", "Time from submission to a worker taking the job",
                               ["endpoint"], buckets=DELAY_BUCKETS, registry=self.registry)
        self.execution = Histogram("gpuform_job_execution_seconds", "Time a worker spent on a job", ["endpoint"],
                                   buckets=DELAY_BUCKETS, registry=self.registry)
        self.cold_starts = Counter("gpuform_cold_starts_total", "Workers started", ["endpoint"],
                                   registry=self.registry)
        self.cold_start = Histogram("gpuform_cold_start_seconds", "Time from start requested to worker ready",
                                    ["endpoint"], buckets=DELAY_BUCKETS, registry=self.registry)
        self.cold_start_phase = Gauge("gpuform_cold_start_phase_seconds",
                                      "Last cold start: seconds from start requested to each phase",
                                      ["endpoint", "phase"], registry=self.registry)
        self.workers = Gauge("gpuform_workers", "Workers by state", ["endpoint", "state"], registry=self.registry)
        self.queue_depth = Gauge("gpuform_queue_depth", "Queued jobs", ["endpoint"], registry=self.registry)
        self.gpu_seconds = Counter("gpuform_billed_worker_seconds_total", "Billed worker seconds",
                                   ["endpoint", "gpu_type"], registry=self.registry)
        self.windows: dict[tuple[str, str], deque[float]] = {}

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
