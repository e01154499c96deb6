"""Which gateway replica a worker talks to, and moving to the next one when it fails.

The gateway gives a worker its routes as full URLs (``RUNPOD_WEBHOOK_*``) on one base URL, and every
replica's base URL in ``GPUFORM_GATEWAY_URLS`` (gateway/replicas.py). :class:`Gateways` rewrites a route
onto the current replica; :meth:`Gateways.failed` moves to the next one when the current one refused the
connection or answered 502/503 (a load balancer without a live replica, a gateway shutting down or without
its database). All replicas share one queue, so any of them takes a result, a chunk or a heartbeat.
"""

from __future__ import annotations

import logging

log = logging.getLogger("gpuform.worker")
UNAVAILABLE = frozenset({502, 503})  # answers that mean "try another replica"


class Gateways:
    """The replicas' base URLs and the one in use. Routes are given on ``origin`` (the base URL the
    ``RUNPOD_WEBHOOK_*`` variables start with); ``bases`` is every replica's (``origin``'s first when it
    is one of them)."""

    def __init__(self, origin: str, bases: list[str]) -> None:
        self.origin = origin.rstrip("/")
        self.bases = [b.rstrip("/") for b in bases if b.strip()] or [self.origin]
        self.current = self.bases.index(self.origin) if self.origin in self.bases else 0

    @classmethod
    def from_env(cls, take_url: str, urls: str) -> Gateways:
        """``take_url``: RUNPOD_WEBHOOK_GET_JOB (its part before ``/v2/`` is the origin); ``urls``: the
        comma-separated GPUFORM_GATEWAY_URLS ('' for a gateway without replicas)."""
        origin = take_url.split("/v2/", 1)[0]
        return cls(origin, [u.strip() for u in urls.split(",")] if urls else [])

    @property
    def base(self) -> str:
        return self.bases[self.current]

    def url(self, route: str) -> str:
        """``route`` (a full URL on the origin) on the current replica."""
        if route.startswith(self.origin):
            return self.base + route[len(self.origin):]
        return route

    def failed(self, used: str) -> None:
        """The replica ``used`` (a URL :meth:`url` returned) failed: move to the next one, unless another
        call has moved already."""
        if len(self.bases) < 2 or not (used == self.base or used.startswith(self.base + "/")):
            return
        before = self.base
        self.current = (self.current + 1) % len(self.bases)
        log.warning("gateway %s unavailable; moving to %s", before, self.base)

    def attempts(self, per_replica: int) -> int:
        """How many tries a call that must not be lost (a result) gets: ``per_replica`` on each replica."""
        return per_replica * len(self.bases)
