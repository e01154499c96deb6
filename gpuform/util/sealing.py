"""Sealed secrets: AES-256-GCM under a key kept apart from what it protects.

A sealed value is ``v1:`` + base64(nonce ‖ ciphertext ‖ tag). ``context`` (e.g. the endpoint's name) is
authenticated with it, so a sealed value moved to another row does not open there.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1:"


class SealError(ValueError):
    """A sealed value that does not open with this key (another key, or damaged)."""


def _cipher(key: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"gpuform-seal\0" + key.encode()).digest())


def seal(key: str, plaintext: bytes, context: str) -> str:
    nonce = os.urandom(12)
    sealed = _cipher(key).encrypt(nonce, plaintext, context.encode())
    return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def unseal(key: str, value: str, context: str) -> bytes:
    if not is_sealed(value):
        raise SealError("not a sealed value")
    raw = base64.b64decode(value[len(PREFIX):])
    try:
        return _cipher(key).decrypt(raw[:12], raw[12:], context.encode())
    except InvalidTag as exc:
        raise SealError("the value does not open with this key") from exc
