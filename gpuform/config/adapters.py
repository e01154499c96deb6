"""LoRA adapters of vllm endpoints (``LORA_MODULES``, parsed by :mod:`gpuform.workers.vllm.lora`), checked twice:

- at validate (no I/O): each adapter needs the endpoint's model to come from a volume, and no name a client
  sends as ``model`` may reach two endpoints (an adapter named like another endpoint's model or adapter);
- at plan (:func:`check_files`, given what each volume's source holds): each adapter's directory is in its
  endpoint's volume, with ``adapter_config.json`` and the weights, and its rank fits ``MAX_LORA_RANK``.

Every problem is located at the endpoint's ``LORA_MODULES`` (file:line).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gpuform.config import schema
from gpuform.diagnostics import Diagnostic, Location, error
from gpuform.workers.vllm import lora

if TYPE_CHECKING:
    from gpuform.config.load import Config


def _adapters(ep: schema.Endpoint) -> list[lora.Adapter]:
    return lora.adapters_of(ep.worker.env) if ep.worker.template == "vllm" else []


def _where(config: Config, name: str) -> Location | None:
    return config.sources.locate(("endpoints", name, "worker", "env", lora.ENV))


def check_names(config: Config) -> list[Diagnostic]:
    """Adapters need a volume; an adapter's name must reach one endpoint only."""
    owner = {ep.model.name: name for name, ep in config.endpoints.items() if ep.model}
    out: list[Diagnostic] = []
    for name, ep in sorted(config.endpoints.items()):
        adapters = _adapters(ep)
        if adapters and (ep.model is None or ep.model.volume is None):
            out.append(error(f"endpoint {name} declares LoRA adapters but its model has no volume",
                             "Adapter paths are relative to the endpoint's volume: set `model: {name: ..., "
                             "volume: ...}`.", _where(config, name), f"endpoint.{name}"))
        for adapter in adapters:
            other = owner.setdefault(adapter.name, name)
            if other != name or (ep.model is not None and ep.model.name == adapter.name):
                out.append(_clash(config, name, adapter.name, other))
    return out


def _clash(config: Config, name: str, adapter: str, other: str) -> Diagnostic:
    served = config.endpoints[other]
    what = "its model" if served.model and served.model.name == adapter else "a LoRA adapter"
    whose = "this endpoint" if other == name else f"endpoint {other}"
    where = _where(config, other) if what == "a LoRA adapter" else \
        config.sources.locate(("endpoints", other, "model", "name"))
    also = f" (declared at {where})" if where and other != name else ""
    return error(f'LoRA adapter "{adapter}" of endpoint {name} is also {what} of {whose}{also}',
                 "A request's `model` must name one endpoint: rename the adapter (clients send its name as "
                 "`model`).", _where(config, name), f"endpoint.{name}")


def placed(config: Config) -> list[tuple[str, str, lora.Adapter]]:
    """(endpoint, volume, adapter) for every adapter of an endpoint whose model has a volume."""
    return [(name, ep.model.volume, adapter) for name, ep in sorted(config.endpoints.items())
            if ep.model is not None and ep.model.volume is not None for adapter in _adapters(ep)]


def check_files(config: Config, files: Mapping[str, set[str]],
                ranks: Mapping[tuple[str, str], int] | None = None) -> list[Diagnostic]:
    """Each adapter's directory holds an adapter, given each volume's files (relative to its root; a volume
    missing from ``files`` is not checked: its contents are not known here), and its rank (``r`` in its
    adapter_config.json, by (volume, path)) fits the endpoint's MAX_LORA_RANK (vLLM's default 16)."""
    out: list[Diagnostic] = []
    for name, volume, adapter in placed(config):
        if volume not in files:
            continue
        missing = lora.missing_files(adapter, files[volume])
        if missing:
            out.append(error(f'LoRA adapter "{adapter.name}": {adapter.path}/ in volume "{volume}" has no '
                             f"{' and no '.join(missing)}",
                             f"Put the adapter (PEFT format) at {adapter.path}/ in the volume's source, or fix "
                             f"its path in {lora.ENV} (relative to the volume root).",
                             _where(config, name), f"endpoint.{name}"))
        rank = (ranks or {}).get((volume, adapter.path))
        limit = _max_rank(config.endpoints[name])
        if not missing and rank is not None and limit is not None and rank > limit:
            out.append(error(f'LoRA adapter "{adapter.name}" has rank {rank}, above MAX_LORA_RANK ({limit})',
                             f"Set MAX_LORA_RANK to {rank} or more in the endpoint's env (vLLM takes 1, 8, 16, 32, "
                             "64, 128, 256, 320 or 512); vLLM refuses the adapter otherwise.",
                             _where(config, name), f"endpoint.{name}"))
    return out


def _max_rank(ep: schema.Endpoint) -> int | None:
    value = str(ep.worker.env.get("MAX_LORA_RANK", lora.DEFAULT_MAX_RANK)).strip()
    return int(value) if value.isdigit() else None  # a bad value is reported with the other flags
