"""Where a gateway's replicas run and how workers reach them (pure: no I/O, no gateway imports).

- :func:`layout` places ``gateway.replicas`` processes: on a pool with ``hosts`` (docker, baremetal) replica
  *i* runs on the pool's *i*-th host with the declared port; on a single-machine pool (local) replica *i*
  binds the declared port + *i*. Replica 0 is where a one-replica gateway has always run.
- :func:`worker_urls` is ``GPUFORM_GATEWAY_URLS`` for a worker: every replica's base URL (advertise_url's
  first), or advertise_url alone when it is a load balancer (a URL that is no replica's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

URLS_ENV = "GPUFORM_GATEWAY_URLS"


@dataclass(frozen=True)
class Replica:
    """One gateway process: its id (``r0``, ``r1``, …), the pool host it runs on, what it binds, its URL."""

    index: int
    host: str
    listen: str
    url: str

    @property
    def id(self) -> str:
        return f"r{self.index}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "listen": self.listen, "url": self.url}


def replica_id(index: int) -> str:
    return f"r{index}"


def pool_hosts(pool: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """(label, address) of each declared host of a pool, or None for a single-machine pool (no ``hosts``)."""
    hosts = pool.get("hosts")
    if not isinstance(hosts, list) or not all(isinstance(h, dict) and "address" in h for h in hosts):
        return None
    return [(str(h.get("name") or h["address"]), str(h["address"])) for h in hosts]


def layout(gateway: Mapping[str, Any], hosts: Sequence[tuple[str, str]] | None) -> list[Replica]:
    """The replicas of a gateway (its attributes: listen, advertise_url, replicas, tls). With one replica its
    URL is advertise_url, as before replicas. Raises ValueError when the pool has fewer hosts than replicas."""
    count = int(gateway.get("replicas") or 1)
    listen, advertise = str(gateway["listen"]), str(gateway["advertise_url"]).rstrip("/")
    if count == 1:
        return [Replica(0, hosts[0][0] if hosts else "local", listen, advertise)]
    if hosts is not None and len(hosts) < count:
        raise ValueError(f"{count} replicas need {count} hosts in the pool, which has {len(hosts)}")
    bind, _, port = listen.rpartition(":")
    scheme = "https" if gateway.get("tls") else "http"
    if hosts is not None:
        return [Replica(i, hosts[i][0], listen, f"{scheme}://{_netloc(hosts[i][1])}:{port}") for i in range(count)]
    here = "127.0.0.1" if bind in ("0.0.0.0", "::", "[::]", "") else bind
    return [Replica(i, "local", f"{bind}:{int(port) + i}", f"{scheme}://{here}:{int(port) + i}")
            for i in range(count)]


def _netloc(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def worker_urls(advertise_url: str, replica_urls: Sequence[str]) -> dict[str, str]:
    """``GPUFORM_GATEWAY_URLS`` for a worker: the URLs it fails over across, the one it starts with first."""
    first = advertise_url.rstrip("/")
    urls = [u.rstrip("/") for u in replica_urls]
    if first not in urls:  # a load balancer in front of the replicas (or no replicas known): it alone
        return {URLS_ENV: first}
    return {URLS_ENV: ",".join([first, *(u for u in urls if u != first)])}


def replica_key(name: str, index: int) -> str:
    """What providers call replica ``index`` of gateway ``name``: ``NAME`` for replica 0 (where a one-replica
    gateway always ran, so its files, unit and container keep their names), ``NAME.rI`` for the others (a
    dot, which no declared name has)."""
    return name if index == 0 else f"{name}.r{index}"


def key_index(key: str) -> int:
    """The replica index of a provider's gateway key (0 for a plain name)."""
    _, dot, rest = key.rpartition(".r")
    return int(rest) if dot and rest.isdigit() else 0


def recorded(computed: Mapping[str, Any], advertise_url: str) -> list[dict[str, Any]]:
    """The replicas a state records (``replica_set``), or replica 0 at advertise_url for a gateway recorded
    before replicas."""
    rows = computed.get("replica_set")
    if isinstance(rows, list) and rows:
        return [dict(r) for r in rows if isinstance(r, dict) and "id" in r and "url" in r]
    return [{"id": "r0", "host": str(computed.get("host") or "local"), "url": advertise_url.rstrip("/")}]
