"""The gateway's runtime configuration, written by apply as JSON and read at start."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuform.config.schema import Gateway, GatewayTimings


@dataclass
class RuntimeConfig:
    name: str
    lineage: str
    attributes: dict[str, Any]
    admin_key_hash: str
    data_dir: Path
    state_dir: Path
    config_dir: Path
    webhook_secret: str | None = None
    pool_overrides: dict[str, Any] | None = None  # pools as seen from the gateway's host (credential paths)
    gateway: Gateway = field(init=False)

    def __post_init__(self) -> None:
        declared = {k: v for k, v in self.attributes.items() if k in Gateway.model_fields}
        declared["admin_key"] = declared["webhook_secret"] = None
        self.gateway = Gateway.model_validate(declared)

    @property
    def timings(self) -> GatewayTimings:
        return self.gateway.timings

    @property
    def pools(self) -> dict[str, dict[str, Any]]:
        pools: dict[str, dict[str, Any]] = self.pool_overrides or self.attributes.get("pools") or {}
        return pools

    @property
    def advertise_url(self) -> str:
        return str(self.attributes.get("advertise_url") or self.gateway.resolved_advertise_url())

    @classmethod
    def load(cls, path: Path) -> RuntimeConfig:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(name=data["name"], lineage=data["lineage"], attributes=data["attributes"],
                   admin_key_hash=data["admin_key_hash"], data_dir=Path(data["data_dir"]),
                   state_dir=Path(data["state_dir"]), config_dir=Path(data["config_dir"]),
                   webhook_secret=(data.get("secrets") or {}).get("webhook_secret"),
                   pool_overrides=data.get("pools"))
