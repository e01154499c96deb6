"""The typed contract between the control plane and the gateway.

The gateway owns these models: apply builds them from the configuration, the gateway validates them once
(its admin API for endpoint specs, its start for the runtime configuration) and then works only with them.
Defaults are defined once, in :mod:`gpuform.config.schema`, which these models extend; nothing here adds a
default of its own.

- :class:`EndpointSpec` — an endpoint as the gateway runs it (``PUT /admin/endpoints/{name}``);
- :class:`RuntimeConfig` — what a gateway process is started with (a 0600 JSON file written by its provider).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SerializeAsAny

from gpuform.config import schema
from gpuform.config.plugins import pool_model
from gpuform.config.tls import resolved as resolved_tls
from gpuform.config.types import Model, Name
from gpuform.workers.vllm import lora


def _as_provider_pool(value: Any) -> Any:
    """A pool's attributes validated by its provider's pool model (so no field is lost in transit)."""
    if isinstance(value, dict):
        model = pool_model(str(value.get("provider", "")))
        if model is None:
            raise ValueError(f'provider "{value.get("provider")}" is not installed where the gateway runs')
        return model.model_validate(value)
    return value


PoolConfig = Annotated[SerializeAsAny[schema.PoolBase], BeforeValidator(_as_provider_pool)]


class EndpointSpec(schema.Endpoint):
    """An endpoint as apply registers it with its gateway: the declared endpoint plus what apply resolved
    (its gateway, its policy's schedule and the host path of its model's volume). Secret env values appear
    only as salted hashes; the real values travel beside the spec (:class:`EndpointPut`)."""

    gateway: Name = Field(description="Gateway serving the endpoint (resolved by apply).")
    schedule: schema.Policy | None = Field(None, description="The endpoint's policy, resolved by apply.")
    volume_path: str | None = Field(None, description="Host directory of the model (volume path + model.path).")
    environment: str | None = Field(None, description="The worker environment apply prepared on the hosts (a "
                                                      "content hash); a new one rolls the workers.")

    @property
    def model_name(self) -> str | None:
        return self.model.name if self.model else None

    @cached_property
    def adapters(self) -> list[str]:
        """Names of the LoRA adapters the endpoint serves beside its model (vllm template, ``LORA_MODULES``)."""
        if self.worker.template != "vllm":
            return []
        return [a.name for a in lora.adapters_of(self.worker.env)]

    @cached_property
    def served_names(self) -> list[str]:
        """Every ``model`` a client may send to reach this endpoint: its model's name, then its adapters."""
        return ([self.model.name] if self.model else []) + self.adapters


class EndpointPut(Model):
    """The body of ``PUT /admin/endpoints/{name}``."""

    spec: EndpointSpec = Field(description="The endpoint.")
    secret_env: dict[str, str] = Field(default_factory=dict, description="Real values of secret worker env.")


class TlsSettings(schema.GatewayTls):
    """The declared TLS files (paths on the machine that ran apply) and the digest of their certificates."""

    content: str | None = Field(None, description="sha256 of the certificates' contents (computed by plan).")


class GatewaySettings(schema.Gateway):
    """The gateway's declared attributes as apply records them (keys as salted hashes), plus what apply
    resolved: the URL workers and clients use, and the pools whose workers the gateway starts."""

    advertise_url: str = Field(description="URL workers and clients use (resolved by apply).")
    tls: TlsSettings | None = Field(None, description="Declared TLS files, with their certificates' digest.")
    pools: dict[Name, PoolConfig] = Field(default_factory=dict, description="Pools the gateway drives.")
    version: str | None = Field(None, description="Build of gpuform the gateway runs (gpuform.util.build): a "
                                                  "new one restarts the gateway on it (resolved by apply).")


class RuntimeConfig(Model):
    """What a gateway process is started with. Written by its provider (mode 0600) and read at start."""

    name: Name = Field(description="The gateway's name (gateway.NAME).")
    lineage: str = Field(description="Lineage of the state that created it; salts every key hash.")
    gateway: GatewaySettings = Field(description="Declared settings, keys hashed.")
    admin_key_hash: str = Field(description="Salted hash of the admin key.")
    secrets_key: str | None = Field(None, description="Key that seals endpoint secrets in the gateway's database "
                                                      "(kept here, apart from the database).")
    webhook_secret: str | None = Field(None, description="Key that signs webhook deliveries.")
    store_url: str | None = Field(None, description="Connection URL of a postgres store (``gateway.store.url`` "
                                                    "holds only its hash).")
    data_dir: str = Field("", description="Directory for the queue database and logs on the gateway host.")
    state_dir: str = Field(description="Directory providers keep their local files under.")
    config_dir: str = Field(description="The configuration directory (relative worker paths start here).")
    host_pools: dict[Name, PoolConfig] | None = Field(
        None, description="Pools as seen from the gateway's host (credential paths rewritten), when it is remote.")
    host_tls: schema.GatewayTls | None = Field(
        None, description="The TLS files as the gateway's host sees them (absolute paths; its provider copies "
                          "them there and rewrites these).")
    replica_id: str = Field("r0", pattern=r"^r[0-9]{1,2}$", description="This process's replica: r0, r1, … "
                                                                        "(gateway.replicas of them).")
    replica_urls: list[str] = Field(default_factory=list, description="Every replica's URL as workers reach them "
                                                                      "(empty: advertise_url alone).")
    replica_listen: str | None = Field(None, description="host:port this replica binds (default gateway.listen; "
                                                         "replicas of a local pool take port, port+1, …).")

    @property
    def replica_index(self) -> int:
        return int(self.replica_id[1:])

    @property
    def listen(self) -> str:
        """The host:port this process binds."""
        return self.replica_listen or self.gateway.listen

    @property
    def timings(self) -> schema.GatewayTimings:
        return self.gateway.timings

    @property
    def pools(self) -> dict[str, schema.PoolBase]:
        """The pools as the gateway must use them from where it runs."""
        return dict(self.host_pools if self.host_pools is not None else self.gateway.pools)

    @property
    def advertise_url(self) -> str:
        return self.gateway.advertise_url.rstrip("/")

    @property
    def tls(self) -> schema.GatewayTls | None:
        """The TLS files where this process runs: as its provider copied them, else as declared."""
        if self.host_tls is not None or self.gateway.tls is None:
            return self.host_tls
        return resolved_tls(self.gateway.tls, Path(self.config_dir))

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or self.state_dir)

    def on_host(self, data_dir: str, state_dir: str | None = None, config_dir: str | None = None,
                host_pools: dict[str, schema.PoolBase] | None = None,
                host_tls: schema.GatewayTls | None = None) -> RuntimeConfig:
        """This configuration as the gateway's host sees it (a provider calls this before writing it)."""
        update: dict[str, Any] = {"data_dir": self.gateway.data_dir or data_dir}
        if host_tls is not None:
            update["host_tls"] = host_tls
        if state_dir is not None:
            update["state_dir"] = state_dir
        if config_dir is not None:
            update["config_dir"] = config_dir
        if host_pools is not None:
            update["host_pools"] = host_pools
        return self.model_copy(update=update)

    def to_file_text(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> RuntimeConfig:
        return cls.model_validate_json(path.read_bytes())
