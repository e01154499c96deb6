"""Keys: client keys (optionally allow-listed per endpoint), the admin key, per-worker tokens.

Only salted hashes are kept (see :func:`gpuform.util.hashing.hash_secret`); a presented key is hashed
and compared in constant time. Keys are never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from gpuform.util.hashing import hash_secret


@dataclass
class KeyRing:
    lineage: str
    admin_hash: str
    client_hashes: dict[str, str] = field(default_factory=dict)  # name -> hash
    _cache: dict[str, str] = field(default_factory=dict)

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
        for name, expected in self.client_hashes.items():
            if hmac.compare_digest(hashed, expected):
                return name
        return None

    def token_hash(self, token: str) -> str:
        return self._hash(token)
