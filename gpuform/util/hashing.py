"""Salted hashes of secrets: what state, plans and the gateway keep instead of a key or a secret value."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

SENSITIVE_PREFIX = "sensitive:hmac-sha256:"


def hash_secret(value: Any, salt: str) -> str:
    """HMAC-SHA256 of ``value`` keyed by ``salt`` (the state's lineage), shortened, with a marker prefix."""
    digest = hmac.new(salt.encode(), str(value).encode(), hashlib.sha256).hexdigest()
    return SENSITIVE_PREFIX + digest[:40]


def is_hashed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SENSITIVE_PREFIX)


def deployment_id(lineage: str) -> str:
    """What a gateway says about its lineage without revealing it (the lineage salts every key hash)."""
    return hashlib.sha256(b"gpuform-deployment\0" + lineage.encode()).hexdigest()[:16]
