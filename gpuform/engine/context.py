"""What an operation (refresh, apply, destroy) works with: directories, the store, providers, gateways."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuform.config.load import Config
from gpuform.errors import GatewayError
from gpuform.provider import Provider, ProviderContext, make_provider
from gpuform.state.model import State
from gpuform.state.store import StateStore

if TYPE_CHECKING:
    from gpuform.gateway.client import AdminClient, ClientTls

Event = Callable[[str, str], None]  # (address, message)
TransferEvent = Callable[[str, int, int], None]  # (what, bytes done, bytes total)


def data_root() -> Path:
    """Where processes gpuform starts on this machine keep their files: ``GPUFORM_DATA_DIR`` or
    ``$XDG_DATA_HOME/gpuform`` (``~/.local/share/gpuform``). Keyed by lineage below it, so every clone of a
    deployment (and every workspace, which has its own lineage) finds the same processes."""
    configured = os.environ.get("GPUFORM_DATA_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gpuform"


@dataclass
class Workspace:
    """A configuration directory, its state (a workspace of a backend), a local working directory for caches,
    and the live objects an operation needs."""

    config_dir: Path
    state_dir: Path  # local working directory: caches, and the local backend's files
    store: StateStore
    config: Config | None = None
    name: str = "default"
    backend: str = "local"
    on_event: Event = field(default=lambda address, message: None)
    on_transfer: TransferEvent = field(default=lambda what, done, total: None)
    cancelled: threading.Event = field(default_factory=threading.Event)
    no_wait: bool = False  # apply does not wait for endpoints' min_workers to be ready
    wait_timeout: float | None = None  # how long it waits (default: the worker's ready_timeout + 30 s)
    _providers: dict[str, Provider] = field(default_factory=dict)
    _admins: dict[tuple[str, str | None, ClientTls | None, tuple[str, ...]], AdminClient] = field(default_factory=dict)
    _secrets: dict[str, str] = field(default_factory=dict)  # generated secrets read once per operation
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def provider(self, pool: str, pool_attrs: dict[str, Any], lineage: str) -> Provider:
        """The provider driving ``pool`` (one instance per pool and operation)."""
        with self._lock:
            if pool not in self._providers:
                events = self.on_event
                ctx = ProviderContext(lineage=lineage, state_dir=self.runtime_dir(lineage), config_dir=self.config_dir,
                                      progress=lambda message: events(f"pool.{pool}", message),
                                      cancelled=self.cancelled, transfer=self.on_transfer)
                self._providers[pool] = make_provider(pool, pool_attrs, ctx)
            return self._providers[pool]

    def admin_client(self, url: str, key: str | None, tls: ClientTls | None = None,
                     fallbacks: tuple[str, ...] = ()) -> AdminClient:
        """One admin client (one connection pool) per gateway, key and TLS setting for the whole operation: an
        apply of 1,000 endpoints makes 1,000 calls over a few kept-alive connections."""
        from gpuform.gateway.client import AdminClient  # httpx: only for operations that reach a gateway

        with self._lock:
            if (url, key, tls, fallbacks) not in self._admins:
                self._admins[(url, key, tls, fallbacks)] = AdminClient(url, key, shared=True, tls=tls,
                                                                       fallbacks=fallbacks)
            return self._admins[(url, key, tls, fallbacks)]

    def client_tls(self, attributes: Mapping[str, Any]) -> ClientTls | None:
        """How this machine verifies a gateway with these recorded attributes over HTTPS."""
        from gpuform.gateway.client import ClientTls

        return ClientTls.of_gateway(attributes, self.config_dir)

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()
        for admin in self._admins.values():
            admin.close()
        self._admins.clear()

    @staticmethod
    def runtime_dir(lineage: str) -> Path:
        """This deployment's directory on this machine (local pools' pid files and logs, wheel caches)."""
        return data_root() / "deployments" / lineage

    def admin_key(self, gateway: str, configured: str | None, create: bool) -> str | None:
        """The gateway's admin key: the configured one, or one generated once and kept (mode 0600)."""
        if configured:
            return configured
        return self.generated_secret(f"gateway.{gateway}.admin_key", "gpf_admin_" + secrets.token_urlsafe(32),
                                     create)

    def store_key(self, gateway: str) -> str:
        """The key that encrypts the secrets in the gateway's database (generated once, mode 0600)."""
        key = self.generated_secret(f"gateway.{gateway}.store_key", secrets.token_urlsafe(32), create=True)
        assert key is not None
        return key

    def generated_secret(self, name: str, fresh: str, create: bool) -> str | None:
        """A generated secret kept with the state in the backend: read it, or (``create``) keep ``fresh``
        (when two operations race, both end with the first one kept)."""
        if name in self._secrets:
            return self._secrets[name]
        found = self.store.secret(name)
        if found is None and create:
            self.store.put_secret(name, fresh)
            found = self.store.secret(name)
        if found is not None:
            self._secrets[name] = found
        return found


def gateway_endpoint(state: State, gateway: str) -> tuple[str, str]:
    """(URL, address) of a gateway recorded in state; raises GatewayError when it is not there."""
    res = state.resources.get(f"gateway.{gateway}")
    if res is None:
        raise GatewayError(f"gateway.{gateway} is not in the state", "Run `gpuform apply` to create it.")
    return str(res.attributes["advertise_url"]), res.address
