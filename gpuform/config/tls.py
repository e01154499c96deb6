"""The gateway's TLS files as paths on this machine, and the digest of their certificates' contents (a new
certificate plans an update). Imported by the gateway's runtime configuration: nothing here reads YAML.
The checks made where the files are declared are in :mod:`gpuform.config.tlscheck`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gpuform.config import schema

PUBLIC_FILES = ("cert_file", "client_ca_file", "ca_file", "client_cert_file")  # what the digest covers


def resolve(base: Path, path: str) -> Path:
    """A declared path on this machine: ``~`` expanded, relative to the configuration directory."""
    return (base / Path(path).expanduser()).resolve()


def resolved(tls: schema.GatewayTls, base: Path) -> schema.GatewayTls:
    """``tls`` with every path absolute on this machine."""
    return schema.GatewayTls.model_validate({k: str(resolve(base, v)) for k, v in tls.files().items()})


def digest(tls: schema.GatewayTls, base: Path) -> str | None:
    """sha256 over the certificates' contents (never the keys: a new key comes with a new certificate), or None
    when one cannot be read (the checks report why)."""
    h = hashlib.sha256()
    for field, path in sorted(tls.files().items()):
        if field not in PUBLIC_FILES:
            continue
        try:
            h.update(f"{field}\0".encode() + resolve(base, path).read_bytes() + b"\0")
        except OSError:
            return None
    return "sha256:" + h.hexdigest()
