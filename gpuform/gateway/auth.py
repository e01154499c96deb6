"""Keys: client keys (optionally allow-listed per endpoint, with rights and limits), the admin key and the
per-worker tokens.

Only salted hashes are kept (see :func:`gpuform.util.hashing.hash_secret`); a presented key is hashed
and compared in constant time. Keys are never logged.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from gpuform.config.schema import ApiKey
from gpuform.util.hashing import hash_secret


@dataclass
class TokenBucket:
    """``rate`` requests per second with bursts of ``burst``; ``take`` answers how long to wait (0: go)."""

    rate: float
    burst: float
    tokens: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class KeyRing:
    lineage: str
    admin_hash: str
    keys: dict[str, str | ApiKey] = field(default_factory=dict)  # name -> hash, or options with the hash
    _cache: dict[str, str] = field(default_factory=dict)
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.options = {name: value if isinstance(value, ApiKey) else ApiKey(key=value)
                        for name, value in self.keys.items()}

    def replace(self, admin_hash: str, keys: dict[str, str | ApiKey]) -> None:
        """Take a reloaded configuration's keys; a removed key is refused from the next request on, a key whose
        options changed starts a fresh rate-limit bucket."""
        before = self.options
        self.admin_hash, self.keys = admin_hash, keys
        self.__post_init__()
        for name in [n for n in self._buckets if before.get(n) != self.options.get(n)]:
            del self._buckets[name]

    def _hash(self, key: str) -> str:
        found = self._cache.get(key)
        if found is None:
            found = hash_secret(key, self.lineage)
            if len(self._cache) < 10_000:
                self._cache[key] = found
        return found

    def is_admin(self, key: str | None) -> bool:
        return key is not None and hmac.compare_digest(self._hash(key), self.admin_hash)

    def client_name(self, key: str | None) -> str | None:
        """The name of the client key presented, or None."""
        if key is None:
            return None
        hashed = self._hash(key)
        for name, options in self.options.items():
            if hmac.compare_digest(hashed, options.key):
                return name
        return None

    def token_hash(self, token: str) -> str:
        return self._hash(token)

    def wait_before(self, name: str, now: float | None = None) -> float:
        """Seconds this key must wait under its rate limit (0: the request may go now)."""
        rate = self.options[name].rate_limit
        if rate is None:
            return 0.0
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(rate, max(1.0, 2 * rate))
        return bucket.take(time.monotonic() if now is None else now)
