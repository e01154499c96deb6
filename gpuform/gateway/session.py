"""Console sessions: a signed cookie every gateway replica accepts, and the CSRF token tied to it.

A session is stateless: ``base64url(json).base64url(hmac)`` with HMAC-SHA256 under a key derived from a secret
every replica of the gateway is started with (its store's sealing key, else the admin key's hash), so a cookie
issued by one replica is valid on all of them and survives a restart. It holds the key's *name* (``None`` for the
admin key), a binding to that key's current hash (rotating the key ends its sessions), a nonce and an expiry;
never the key. The CSRF token is an HMAC of the nonce: a page gets it in its HTML, the console's scripts send it
back in :data:`CSRF_HEADER` (or a form field) on every request that changes something.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

COOKIE = "gpuform_console"
CSRF_HEADER = "x-gpuform-csrf"
CSRF_FIELD = "csrf"
LIFETIME = 12 * 3600.0
_ADMIN = "*admin*"


def derive_secret(lineage: str, secrets_key: str | None, admin_key_hash: str) -> bytes:
    """The signing key: the same on every replica of one gateway (they share its configuration)."""
    base = (secrets_key or admin_key_hash).encode()
    return hmac.new(base, f"gpuform console session/{lineage}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Session:
    """A logged-in console user: a client key by name, or the admin key (``key_name`` None)."""

    key_name: str | None
    binding: str
    nonce: str
    expires_at: float

    @property
    def admin(self) -> bool:
        return self.key_name is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issue and read session cookies and their CSRF tokens under one secret."""

    def __init__(self, secret: bytes, lifetime: float = LIFETIME) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"|" + data, hashlib.sha256).digest()

    def binding(self, key_hash: str) -> str:
        """What ties a session to the key's current hash (a rotated key no longer matches)."""
        return _b64(self._mac("bind", key_hash.encode()))[:22]

    def issue(self, key_name: str | None, key_hash: str, now: float) -> tuple[str, Session]:
        """A new session of ``key_name`` (None: the admin key) and its cookie value."""
        session = Session(key_name, self.binding(key_hash), secrets.token_urlsafe(16), now + self.lifetime)
        payload = {"k": _ADMIN if key_name is None else key_name, "b": session.binding, "n": session.nonce,
                   "e": session.expires_at}
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(body)}.{_b64(self._mac('session', body))}", session

    def read(self, cookie: str | None, now: float) -> Session | None:
        """The session in ``cookie``; None when it is absent, malformed, forged or expired."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 4096:
            return None
        body_text, mac_text = cookie.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        return _session_of(body, now)

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac("csrf", session.nonce.encode()))

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token(session).encode())


def _session_of(body: bytes, now: float) -> Session | None:
    try:
        data: Any = json.loads(body)
        name, binding, nonce, expires = data["k"], data["b"], data["n"], float(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(v, str) for v in (name, binding, nonce)) or expires <= now:
        return None
    return Session(None if name == _ADMIN else name, binding, nonce, expires)


def same_origin(origin: str | None, hosts: Iterable[str | None]) -> bool:
    """Whether an ``Origin`` (or ``Referer``) header names one of ``hosts`` (``host[:port]``, either scheme: a
    proxy may end TLS in front of the gateway); a missing or unreadable one does not."""
    if not origin:
        return False
    netloc = urlsplit(origin.strip()).netloc.lower()
    return bool(netloc) and any(netloc == h.strip().lower() for h in hosts if h)
