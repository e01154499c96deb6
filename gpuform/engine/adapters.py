"""Plan-time check of LoRA adapters against what the volumes' sources hold (:mod:`gpuform.config.adapters`
decides; this module reads the files it needs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from gpuform.config import adapters
from gpuform.config.load import Config
from gpuform.errors import ConfigError
from gpuform.util.manifests import VolumeSource
from gpuform.workers.vllm.lora import CONFIG_FILE


def check(config_dir: Path, config: Config, sources: Mapping[str, VolumeSource]) -> None:
    """Raises ConfigError (located at each endpoint's LORA_MODULES) for an adapter its volume's source lacks or
    whose rank is above the endpoint's MAX_LORA_RANK."""
    files = {name: set(src.manifest) for name, src in sources.items() if not src.error}
    problems = adapters.check_files(config, files, _ranks(config_dir, config, files))
    if problems:
        raise ConfigError(problems)


def _ranks(config_dir: Path, config: Config, files: Mapping[str, set[str]]) -> dict[tuple[str, str], int]:
    """``r`` from each present adapter's adapter_config.json, by (volume, adapter path)."""
    out: dict[tuple[str, str], int] = {}
    for _, volume, adapter in adapters.placed(config):
        rel = f"{adapter.path}/{CONFIG_FILE}"
        source = getattr(config.volumes[volume], "source", None)
        if volume not in files or rel not in files[volume] or not source:
            continue
        try:
            rank = json.loads((config_dir / source / rel).read_text(encoding="utf-8")).get("r")
        except (OSError, ValueError, AttributeError):
            continue  # unreadable or not an object: vLLM will say so; the presence check has passed
        if isinstance(rank, int):
            out[(volume, adapter.path)] = rank
    return out
