"""Webhook destinations: which hosts the gateway may call for a client.

A destination is refused when any address its name resolves to is loopback, link-local, private, multicast,
reserved or unspecified, unless the policy allows private destinations or lists it. Resolution happens at
every delivery and the connection goes to the address that was checked (no second lookup to rebind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from gpuform.config.schema import WebhookPolicy

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(ValueError):
    """A destination the policy does not allow; the message says why."""


def _private(ip: Address) -> bool:
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
                                     and _private(ip.ipv4_mapped)))


def _listed(host: str, ip: Address | None, policy: WebhookPolicy) -> bool:
    for entry in policy.allow:
        if entry.lower() == host.lower():
            return True
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def check_url(url: str, policy: WebhookPolicy) -> tuple[str, int]:
    """(host, port) of an http(s) URL whose literal host is allowed; raises Refused otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused('"webhook" must be an http(s) URL with a host')
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ip: Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        ip = ipaddress.ip_address("127.0.0.1")
    if ip is not None:
        check_address(host, ip, policy)
    return host, port


def check_address(host: str, ip: Address, policy: WebhookPolicy) -> None:
    if _private(ip) and not policy.allow_private and not _listed(host, ip, policy):
        raise Refused(f"webhook destination {host} ({ip}) is a private, loopback or link-local address; the "
                      "gateway's configuration must allow it (gateway.webhooks.allow_private or allow)")


async def resolve_checked(url: str, policy: WebhookPolicy) -> str:
    """The address to connect to for ``url``: every address its host resolves to must be allowed."""
    host, port = check_url(url, policy)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return str(literal)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise Refused(f"webhook destination {host} does not resolve")
    for ip in addresses:
        check_address(host, ip, policy)
    return str(addresses[0])
