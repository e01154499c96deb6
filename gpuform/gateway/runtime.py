"""The gateway's in-process state: configuration, store, endpoints and (in later layers) queue and workers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from gpuform.gateway.auth import KeyRing
from gpuform.gateway.config import RuntimeConfig
from gpuform.gateway.db import Database


@dataclass
class EndpointRecord:
    name: str
    spec: dict[str, Any]
    secret_env: dict[str, str]
    revision: str


class Runtime:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self.db = Database(config.data_dir / "gateway.db")
        self.keys = KeyRing(config.lineage, config.admin_key_hash, dict(config.gateway.api_keys))
        self.endpoints: dict[str, EndpointRecord] = {
            name: EndpointRecord(name, spec, env, rev) for name, (spec, env, rev) in self.db.endpoints().items()}
        self.db.set_meta("lineage", config.lineage)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.db.close()

    async def put_endpoint(self, name: str, spec: dict[str, Any], secret_env: dict[str, str], revision: str) -> None:
        self.db.put_endpoint(name, spec, secret_env, revision)
        self.endpoints[name] = EndpointRecord(name, spec, secret_env, revision)

    async def delete_endpoint(self, name: str, drain_timeout: float) -> None:
        self.db.delete_endpoint(name)
        self.endpoints.pop(name, None)

    def endpoint_status(self, name: str) -> dict[str, Any]:
        return {"workers": {}, "jobs": {}}

    def status(self) -> dict[str, Any]:
        return {"gateway": self.config.name, "lineage": self.config.lineage,
                "endpoints": {n: self.endpoint_status(n) for n in sorted(self.endpoints)}}

    def describe(self) -> str:
        return json.dumps({"name": self.config.name, "endpoints": sorted(self.endpoints)})
