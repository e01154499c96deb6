"""An endpoint of a configuration as the simulator needs it: its scaling policy (built by the gateway's own
:func:`~gpuform.gateway.autoscaler.policy_of`, schedule included), its workers' concurrency, its gateway's
reconcile interval and the price of one worker from its pool."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gpuform.config.load import Config
from gpuform.diagnostics import did_you_mean
from gpuform.errors import GpuformError
from gpuform.gateway.autoscaler import ScalingPolicy, policy_of
from gpuform.spec import EndpointSpec
from gpuform.workerspec import jobs_per_worker


@dataclass(frozen=True)
class Basis:
    """What the configuration says about one endpoint, for a simulation."""

    name: str
    policy: ScalingPolicy
    concurrency: int
    reconcile_interval: float
    price_per_second: float | None  # one worker: the GPU type's price times GPUs per worker
    gpu_type: str | None  # the type priced (the first of gpu.types the pool has a price for)
    source: str = ""


def endpoint_basis(config: Config, name: str, gpu_type: str | None = None) -> Basis:
    """The endpoint ``name`` of ``config``; raises GpuformError naming the endpoints there are."""
    ep = config.endpoints.get(name)
    if ep is None:
        known = ", ".join(sorted(config.endpoints)) or "none"
        raise GpuformError(f'no endpoint "{name}" in {config.directory} (endpoints: {known})',
                           f"Name one of its endpoints.{did_you_mean(name, config.endpoints)}")
    gateway = config.gateway_of(ep)
    policy = config.policies.get(ep.policy) if ep.policy else None
    body: dict[str, Any] = {**ep.model_dump(mode="json"), "gateway": gateway,
                            "schedule": policy.model_dump(mode="json") if policy else None}
    spec = EndpointSpec.model_validate(body)
    prices = config.pools[ep.pool].price_per_gpu_second
    chosen = gpu_type or next((t for t in ep.gpu.types if t in prices), None)
    if gpu_type is not None and gpu_type not in prices:
        raise GpuformError(f'pool {ep.pool} has no price for GPU type "{gpu_type}" (priced: '
                           f'{", ".join(sorted(prices)) or "none"})',
                           f"Add it to pools.{ep.pool}.price_per_gpu_second, or pass a priced --gpu-type.")
    price = float(prices[chosen]) * max(1, ep.gpu.count) if chosen is not None else None
    interval = config.gateways[gateway].timings.reconcile_interval
    slots = jobs_per_worker(ep.worker.template, ep.worker.concurrency, ep.worker.env)
    return Basis(name, policy_of(spec), slots, interval, price, chosen, config.source_of("endpoint", name))


POLICY_FIELDS = ("min_workers", "max_workers", "idle_timeout", "scaler", "scaler_value", "keep_alive")
SCALERS = ("queue_delay", "request_count", "rate_forecast")
KEEP_ALIVE = ("fixed", "learned")


def override(policy: ScalingPolicy, **changes: Any) -> ScalingPolicy:
    """``policy`` with the given scaling fields changed (None leaves a field as it is); raises GpuformError
    when the result cannot run."""
    given = {k: v for k, v in changes.items() if v is not None}
    unknown = set(given) - set(POLICY_FIELDS)
    if unknown:
        raise GpuformError(f"not a scaling setting: {', '.join(sorted(unknown))}",
                           f"Use {', '.join(POLICY_FIELDS)}.")
    out = replace(policy, **given)
    check_policy(out)
    return out


def check_policy(policy: ScalingPolicy) -> None:
    """Raise GpuformError when ``policy`` cannot serve a request or is not one the configuration allows."""
    if policy.max_workers < 1:
        raise GpuformError("max_workers is 0: no request would ever run", "Set --max-workers 1 or more.")
    if policy.min_workers > policy.max_workers:
        raise GpuformError(f"min_workers ({policy.min_workers}) is greater than max_workers ({policy.max_workers})",
                           "Raise --max-workers or lower --min-workers.")
    if policy.scaler not in SCALERS:
        raise GpuformError(f'unknown scaler "{policy.scaler}"', f"Use {', '.join(SCALERS)}.")
    if policy.keep_alive not in KEEP_ALIVE:
        raise GpuformError(f'unknown keep_alive "{policy.keep_alive}"', f"Use {' or '.join(KEEP_ALIVE)}.")
    if policy.scaler_value <= 0 or policy.idle_timeout < 0 or policy.min_workers < 0:
        raise GpuformError("scaler_value must be above 0, idle_timeout and min_workers at least 0",
                           "Fix the value given.")
