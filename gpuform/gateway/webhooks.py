"""Webhook deliveries: POST the job's final status to the URL the client gave, retried and signed.

Signature header (when the gateway has a ``webhook_secret``)::

    X-Gpuform-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

A receiver recomputes the HMAC over the timestamp and the exact body bytes and compares in constant time
(see :func:`verify`). A delivery succeeds on any 2xx; otherwise it is retried ``webhook_retries`` times,
``webhook_retry_delay`` apart (RunPod: 2 more times, 10 s apart).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from gpuform.config.schema import GatewayTimings, WebhookPolicy
from gpuform.gateway.destinations import Refused, resolve_checked

log = logging.getLogger("gpuform.webhooks")
SIGNATURE_HEADER = "X-Gpuform-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    """Check a signature header; also rejects timestamps more than ``tolerance`` seconds old."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class Webhooks:
    def __init__(self, timings: GatewayTimings, secret: str | None,
                 transport: httpx.AsyncBaseTransport | None = None, policy: WebhookPolicy | None = None) -> None:
        self.timings = timings
        self.policy = policy or WebhookPolicy()
        self.secret = secret
        self.transport = transport
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=10.0, trust_env=False, transport=self.transport)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.client is not None:
            await self.client.aclose()

    def deliver(self, url: str, payload: dict[str, Any], fields: dict[str, Any] | None = None) -> None:
        """Deliver ``payload`` in the background; ``fields`` go on its log lines (the job's id)."""
        body = json.dumps(payload).encode()
        task = asyncio.get_running_loop().create_task(self._send(url, body, fields or {}))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, url: str, body: bytes, fields: dict[str, Any]) -> None:
        assert self.client is not None
        attempts = 1 + self.timings.webhook_retries
        for attempt in range(1, attempts + 1):
            headers = {"Content-Type": "application/json"}
            if self.secret:
                headers[SIGNATURE_HEADER] = sign(self.secret, body, int(time.time()))
            try:
                resp = await self._post(url, body, headers)
                if 200 <= resp.status_code < 300:
                    return
                reason = f"HTTP {resp.status_code}"
            except Refused as exc:
                log.warning("webhook %s refused: %s", url, exc, extra=fields)
                return
            except (httpx.HTTPError, OSError) as exc:
                reason = type(exc).__name__
            log.info("webhook %s attempt %d/%d failed: %s", url, attempt, attempts, reason, extra=fields)
            if attempt < attempts:
                await asyncio.sleep(self.timings.webhook_retry_delay)
        log.warning("webhook %s gave up after %d attempts", url, attempts, extra=fields)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST to the address the destination resolved to and passed the policy (Host and SNI keep the name),
        never following a redirect."""
        assert self.client is not None
        address = await resolve_checked(url, self.policy)
        parts = httpx.URL(url)
        extensions = {"sni_hostname": parts.host} if parts.scheme == "https" else {}
        pinned = parts.copy_with(host=address)
        return await self.client.post(pinned, content=body, headers={**headers, "Host": parts.netloc.decode()},
                                      extensions=extensions, follow_redirects=False)
