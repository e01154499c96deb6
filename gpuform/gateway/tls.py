"""TLS at the gateway: uvicorn's options for serving HTTPS (mTLS when a client CA is declared), and the files
each worker needs to verify the gateway and, under mTLS, to present its certificate.

Workers get their files by environment variable (the provider writes each file, mode 0600, where the worker
runs): ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE`` name a bundle of ``ca_file`` plus the public roots (so a
worker's other HTTPS calls still verify; aiohttp and OpenSSL read the first, ``requests`` the second: the
runpod SDK uses both), ``GPUFORM_TLS_CLIENT_CERT``/``GPUFORM_TLS_CLIENT_KEY`` the client certificate that
gpuform's worker SDK presents.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

from gpuform.config.schema import GatewayTls
from gpuform.errors import GpuformError

CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
CLIENT_CERT_ENV = "GPUFORM_TLS_CLIENT_CERT"
CLIENT_KEY_ENV = "GPUFORM_TLS_CLIENT_KEY"
REAPPLY = "Apply again (`gpuform apply -replace gateway.NAME`) to copy the files from the configuration."


def server_options(tls: GatewayTls | None) -> dict[str, Any]:
    """uvicorn's ssl_* options (none without TLS). Raises GpuformError when the files cannot be loaded."""
    if tls is None:
        return {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise GpuformError(f"cannot load the gateway's TLS files ({tls.cert_file}, {tls.key_file}): {exc}",
                           REAPPLY) from exc
    return {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file, "ssl_ca_certs": tls.client_ca_file,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
            "ssl_ciphers": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5"}


def worker_files(tls: GatewayTls | None) -> dict[str, bytes]:
    """Environment variable -> content of the file it must name, for every worker this gateway starts."""
    if tls is None:
        return {}
    out: dict[str, bytes] = {}
    if tls.ca_file:
        bundle = _read(tls.ca_file).rstrip(b"\n") + b"\n" + _public_roots()
        out.update(dict.fromkeys(CA_ENV, bundle))
    if tls.client_cert_file and tls.client_key_file:
        out[CLIENT_CERT_ENV] = _read(tls.client_cert_file)
        out[CLIENT_KEY_ENV] = _read(tls.client_key_file)
    return out


def connection(tls: GatewayTls | None, advertise_url: str) -> str:
    """What workers need to reach the gateway beyond their endpoint: '' over plain HTTP, else a digest of the
    URL and of the files they get. A worker started with other values cannot reach it: it is replaced."""
    if tls is None:
        return ""
    h = hashlib.sha256(advertise_url.encode())
    for var, data in sorted(worker_files(tls).items()):
        h.update(f"\0{var}\0".encode() + hashlib.sha256(data).digest())
    return "tls-" + h.hexdigest()[:12]


def _public_roots() -> bytes:
    """The public CA roots (certifi's, which httpx brings), so SSL_CERT_FILE does not cut a worker off the web."""
    import certifi

    return Path(certifi.where()).read_bytes()


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise GpuformError(f"cannot read the TLS file {path}: {exc.strerror}", REAPPLY) from exc
