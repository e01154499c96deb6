"""TLS on a real gateway (local pool) with certificates made by the test: turned on for a running deployment,
echo workers of gpuform's SDK and of the runpod SDK (verifying through SSL_CERT_FILE) replace those started
over plain HTTP and complete jobs over HTTPS; the CLI verifies the gateway and says clearly when it cannot; a
renewed certificate is a planned update; under mTLS a client without a certificate is refused at the
handshake while gpuform's CLI and workers present theirs."""

from __future__ import annotations

import os
import ssl
import stat
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import pool_dir, run_gpuform, write_config
from tests.helpers import KEY, Deployment, wait_for
from tests.integration.test_runpod_compat import RUNPOD_HANDLER
from tests.tlsfiles import make_pki, reissue_server

pytestmark = pytest.mark.integration


def _config(port: int, tls: str, endpoints: str) -> str:
    return textwrap.dedent(f"""
        pools:
          here: {{provider: local, price_per_gpu_second: {{cpu: 0.001}}}}
        gateway:
          main:
            pool: here
            listen: 127.0.0.1:{port}
            api_keys: {{test: {KEY}}}
            tls: {{{tls}}}
            timings: {{lease_timeout: 5s, ping_interval: 1s, reconcile_interval: 0.2s, drain_timeout: 5s,
                      take_timeout: 2s, start_backoff: 1s, start_backoff_max: 4s}}
        """) + textwrap.dedent(endpoints)


SERVER = "cert_file: tls/server.pem, key_file: tls/server-key.pem, ca_file: tls/ca.pem"
MTLS = SERVER + (", client_ca_file: tls/client-ca.pem, client_cert_file: tls/client.pem, "
                 "client_key_file: tls/client-key.pem")
ECHO = """
endpoints:
  echo:
    pool: here
    worker: {template: echo}
    scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
"""


def _https(deployment: Deployment, files: dict[str, Path], cert: bool = False) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(files["ca"]))
    if cert:
        context.load_cert_chain(files["client_cert"], files["client_key"])
    return httpx.Client(base_url=f"https://127.0.0.1:{deployment.port}", verify=context, trust_env=False,
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def _served_serial(port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        from cryptography import x509

        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)


def test_https_gateway_with_sdk_and_runpod_workers_cli_verification_and_renewal(deployment: Deployment) -> None:
    files = make_pki(deployment.workdir)
    (deployment.workdir / "rp_handler.py").write_text(RUNPOD_HANDLER)
    endpoints = ECHO + f"""
  rp:
    pool: here
    worker: {{command: [{sys.executable}, rp_handler.py, plain]}}
    scaling: {{min_workers: 1, max_workers: 1, idle_timeout: 60s}}
"""
    plain = _config(deployment.port, "X", endpoints).replace("    tls: {X}\n", "")
    deployment.apply_text(plain)  # first over plain HTTP: turning TLS on replaces the workers started before
    with deployment.http() as http:
        assert http.post("/v2/echo/runsync", json={"input": 0}).json()["output"] == {"echo": 0}
    deployment.apply_text(_config(deployment.port, SERVER, endpoints))

    with _https(deployment, files) as http:
        assert http.post("/v2/echo/runsync", json={"input": {"a": 1}}).json()["output"] == {"echo": {"a": 1}}
        assert http.post("/v2/rp/runsync", json={"input": {"x": 2}}).json()["output"] == {"echo": {"x": 2}}
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on a TLS port
        httpx.get(f"http://127.0.0.1:{deployment.port}/healthz", timeout=5).raise_for_status()

    gdir = pool_dir(deployment.workdir) / "gateways" / "main" / "tls"
    assert stat.S_IMODE(os.stat(gdir / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(gdir).st_mode) == 0o700
    bundles = list((pool_dir(deployment.workdir) / "workers" / "files").glob("*.pem"))
    assert len(bundles) == 1 and files["ca"].read_text() in bundles[0].read_text()  # the CA plus the public roots
    assert stat.S_IMODE(os.stat(bundles[0]).st_mode) == 0o600

    listed = run_gpuform("-C", str(deployment.workdir), "requests", "echo", "--json")
    assert listed.returncode == 0 and '"status": "COMPLETED"' in listed.stdout, listed.stderr

    good = files["ca"].read_bytes()
    files["ca"].write_bytes(files["other_ca"].read_bytes())  # the CLI now trusts another CA only
    try:
        refused = run_gpuform("-C", str(deployment.workdir), "requests", "echo")
    finally:
        files["ca"].write_bytes(good)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert "presented a certificate this machine does not trust" in refused.stderr, refused.stderr
    assert "tls.ca_file" in refused.stderr

    before = _served_serial(deployment.port, files["ca"])
    reissue_server(files)
    planned = run_gpuform("-C", str(deployment.workdir), "plan", "-detailed-exitcode")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "gateway.main will be updated in-place" in planned.stdout and "content" in planned.stdout
    deployment.apply_text(_config(deployment.port, SERVER, endpoints))
    assert _served_serial(deployment.port, files["ca"]) != before
    with _https(deployment, files) as http:
        wait_for(lambda: http.post("/v2/echo/runsync", json={"input": 3}).json().get("output") == {"echo": 3}, 60,
                 what="a job after the renewal")


def test_mtls_refuses_a_client_without_a_certificate(deployment: Deployment) -> None:
    files = make_pki(deployment.workdir)
    deployment.apply_text(_config(deployment.port, MTLS, ECHO))
    with _https(deployment, files, cert=True) as http:
        assert http.post("/v2/echo/runsync", json={"input": {"m": 1}}).json()["output"] == {"echo": {"m": 1}}
    with _https(deployment, files) as anonymous, pytest.raises(httpx.TransportError):
        anonymous.get("/v2/echo/health")
    status = run_gpuform("-C", str(deployment.workdir), "status", "--json")
    assert status.returncode == 0 and '"error"' not in status.stdout, status.stdout + status.stderr

    write_config(deployment.workdir, _config(deployment.port, SERVER + ", client_ca_file: tls/client-ca.pem, "
                                             "client_cert_file: tls/other.pem, client_key_file: tls/client-key.pem",
                                             ECHO))
    missing = run_gpuform("-C", str(deployment.workdir), "plan")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "tls.client_cert_file" in missing.stderr and "does not exist" in missing.stderr, missing.stderr
    write_config(deployment.workdir, _config(deployment.port, MTLS, ECHO))
