"""The gateway's edge: uvicorn's httptools protocol with limits, so that whatever one client sends, the others
keep being served.

Checked while bytes arrive, before anything is buffered whole:

- the request line (414) and the headers, by size and count (431), counted on the raw bytes too, so one
  giant header is refused before the parser has gathered it;
- time: a request's headers must arrive within ``header_timeout`` of its first byte (or of connecting), and
  a body may not pause longer than ``body_timeout`` (408). Responses are not reads: long polls, /runsync
  waits and SSE streams are unaffected;
- bodies, by the route's limit, from Content-Length at once or while a chunked body streams (413);
- connections, per peer (429) and in total (503). A trusted proxy may open its connections with a PROXY
  protocol v1 line naming the real client.

Every refusal is a JSON body with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gpuform.config.schema import GatewayLimits

BodyLimit = Callable[[str, str], int]  # (method, path) -> bytes
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}
SLACK = 65_536  # one socket read of body bytes may arrive with the last header bytes


class EdgeState:
    """Connections by peer address, shared by every connection of one server."""

    def __init__(self) -> None:
        self.by_peer: dict[str, int] = {}
        self.total = 0

    def enter(self, peer: str) -> None:
        self.by_peer[peer] = self.by_peer.get(peer, 0) + 1
        self.total += 1

    def leave(self, peer: str) -> None:
        left = self.by_peer.get(peer, 1) - 1
        if left:
            self.by_peer[peer] = left
        else:
            self.by_peer.pop(peer, None)
        self.total -= 1


def trusted(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def guarded_protocol(limits: GatewayLimits, body_limit: BodyLimit, trusted_proxies: list[str],
                     proxy_protocol: bool) -> type[HttpToolsProtocol]:
    """An httptools protocol class enforcing ``limits`` (uvicorn's ``http=`` takes it)."""
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
    state = EdgeState()

    class Guarded(GuardedProtocol):
        pass

    Guarded.limits, Guarded.body_limit, Guarded.edge = limits, staticmethod(body_limit), state
    Guarded.networks, Guarded.proxy_protocol = networks, proxy_protocol
    return Guarded


class GuardedProtocol(HttpToolsProtocol):
    limits: GatewayLimits
    body_limit: BodyLimit
    edge: EdgeState
    networks: list[Network]
    proxy_protocol: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer = ""
        self._counted = False
        self._timer: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._header_bytes = 0
        self._headers_seen = 0
        self._url_bytes = 0
        self._body_bytes = 0
        self._body_cap = 0
        self._refused = False
        self._awaiting_proxy_line = False
        self._proxy_buffer = b""

    # ---- connections ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        if self.proxy_protocol and trusted(address, self.networks):
            self._awaiting_proxy_line = True
        else:
            self._admit(address)
        self._arm(self.limits.header_timeout, 408, "the request's headers did not arrive in time")

    def _admit(self, peer: str) -> None:
        self._peer, self._counted = peer, True
        self.edge.enter(peer)
        if self.edge.total > self.limits.max_connections:
            self._refuse(503, "the gateway has too many open connections; retry shortly", retry_after=1)
        elif self.edge.by_peer[peer] > self.limits.max_connections_per_peer:
            self._refuse(429, f"too many open connections from {peer}; close idle ones", retry_after=1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self.edge.leave(self._peer)
            self._counted = False
        super().connection_lost(exc)

    # ---- reading ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_proxy_line:
            data = self._proxy_line(data)
            if not data:
                return
        if self._in_headers:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes + self.limits.max_request_line + SLACK:
                self._refuse(431, f"request headers exceed {self.limits.max_header_bytes} bytes")
                return
        super().data_received(data)

    def _proxy_line(self, data: bytes) -> bytes:
        """Consume a PROXY protocol v1 line from a trusted proxy; return what follows it."""
        self._proxy_buffer += data
        end = self._proxy_buffer.find(b"\r\n")
        if end < 0:
            if len(self._proxy_buffer) > 107:
                self._refuse(400, "expected a PROXY protocol v1 line from the trusted proxy")
            return b""
        line, rest = self._proxy_buffer[:end].decode("ascii", "replace").split(), self._proxy_buffer[end + 2:]
        self._awaiting_proxy_line, self._proxy_buffer = False, b""
        if len(line) == 6 and line[0] == "PROXY" and line[1] in ("TCP4", "TCP6"):
            self.client = (line[2], int(line[4]) if line[4].isdigit() else 0)
        elif not (line[:1] == ["PROXY"] and line[1:2] == ["UNKNOWN"]):
            self._refuse(400, "malformed PROXY protocol line from the trusted proxy")
            return b""
        self._admit(self.client[0] if self.client else "")
        return b"" if self._refused else rest

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = self._headers_seen = self._url_bytes = self._body_bytes = 0
        if self._timer is None:
            self._arm(self.limits.header_timeout, 408, "the request's headers did not arrive in time")

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_request_line:
            self._refuse(414, f"the request line exceeds {self.limits.max_request_line} bytes")
            raise httptools.HttpParserError("request line too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_seen += 1
        size = sum(len(n) + len(v) for n, v in self.headers) + len(name) + len(value)
        if self._headers_seen > self.limits.max_headers or size > self.limits.max_header_bytes:
            self._refuse(431, f"at most {self.limits.max_headers} headers, {self.limits.max_header_bytes} bytes "
                              "in all")
            raise httptools.HttpParserError("headers too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        method = self.parser.get_method().decode("ascii", "replace")
        path = httptools.parse_url(self.url).path.decode("ascii", "replace")
        self._body_cap = self.body_limit(method, path)
        declared = dict(self.headers).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self._body_cap:
            self._refuse(413, f"request body of {int(declared)} bytes exceeds this route's limit of "
                              f"{self._body_cap} bytes; send large inputs by reference (a URL) instead")
            return
        super().on_headers_complete()
        if not self.parser.should_upgrade():
            self._arm(self.limits.body_timeout, 408, "the request body stalled")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            raise httptools.HttpParserError("refused")
        self._body_bytes += len(body)
        if self._body_bytes > self._body_cap:
            self._refuse(413, f"request body exceeds this route's limit of {self._body_cap} bytes; send large "
                              "inputs by reference (a URL) instead")
            raise httptools.HttpParserError("body too large")
        self._arm(self.limits.body_timeout, 408, "the request body stalled")
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            raise httptools.HttpParserError("refused")
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            return  # our own refusal stopped the parser; it has answered already
        self._refuse(400, "the request is not valid HTTP")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_headers = True
        self._header_bytes = 0

    # ---- timers and refusals ------------------------------------------------------------------------

    def _arm(self, seconds: float, status: int, message: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._refuse, status, message)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, message: str, retry_after: int | None = None) -> None:
        """Answer ``status`` with a JSON error and close, unless a response is already under way."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started:
            self.transport.close()
            return
        if self.cycle is not None:
            self.cycle.response_complete = True  # the app, if it runs, writes nothing more
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        body = json.dumps({"error": message}).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-type: application/json",
                f"content-length: {len(body)}", "connection: close"]
        if retry_after is not None:
            head.append(f"retry-after: {retry_after}")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.transport.close()
