"""TLS pieces of the runtime without a network: the files a worker gets (the CA bundle keeps the public
roots; names are content-addressed and shared), the CLI's verification settings from recorded attributes,
and the message a TLS failure becomes."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from gpuform.config.schema import GatewayTls
from gpuform.errors import GpuformError
from gpuform.gateway.client import ClientTls, tls_refusal
from gpuform.gateway.tls import server_options, worker_files
from gpuform.provider import WorkerLaunch
from tests.tlsfiles import make_pki

pytestmark = pytest.mark.unit


def _tls(files: dict[str, Path], mtls: bool = True) -> GatewayTls:
    extra = {"client_ca_file": str(files["client_ca"]), "client_cert_file": str(files["client_cert"]),
             "client_key_file": str(files["client_key"])} if mtls else {}
    return GatewayTls(cert_file=str(files["cert"]), key_file=str(files["key"]), ca_file=str(files["ca"]), **extra)


def test_workers_get_the_ca_with_the_public_roots_and_the_client_certificate(tmp_path: Path) -> None:
    files = make_pki(tmp_path)
    got = worker_files(_tls(files))
    assert set(got) == {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "GPUFORM_TLS_CLIENT_CERT", "GPUFORM_TLS_CLIENT_KEY"}
    bundle = got["SSL_CERT_FILE"]
    assert bundle.startswith(files["ca"].read_bytes()) and bundle.count(b"BEGIN CERTIFICATE") > 50
    launch = WorkerLaunch("w1", "ep", "L", "echo", None, [], None, None, {}, ["cpu"], 1, files=got)
    assert len(launch.named_files()) == 3  # the bundle once for both variables
    env = launch.file_env("/gpuform")
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] and env["SSL_CERT_FILE"].startswith("/gpuform/")
    assert worker_files(_tls(files, mtls=False)).keys() == {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
    assert worker_files(None) == {}


def test_server_options_ask_for_client_certificates_only_under_mtls(tmp_path: Path) -> None:
    files = make_pki(tmp_path)
    assert server_options(_tls(files))["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert server_options(_tls(files, mtls=False))["ssl_cert_reqs"] == ssl.CERT_NONE
    assert server_options(None) == {}
    broken = GatewayTls(cert_file=str(files["cert"]), key_file=str(files["client_key"]))
    with pytest.raises(GpuformError, match="cannot load the gateway's TLS files"):
        server_options(broken)


def test_the_cli_reads_its_tls_settings_from_the_recorded_attributes(tmp_path: Path) -> None:
    attrs = {"tls": {"cert_file": "tls/s.pem", "key_file": "tls/k.pem", "ca_file": "tls/ca.pem",
                     "client_cert_file": "~/c.pem", "client_key_file": "/abs/k.pem", "content": "sha256:x"}}
    tls = ClientTls.of_gateway(attrs, tmp_path)
    assert tls == ClientTls(str(tmp_path / "tls" / "ca.pem"), str(Path("~/c.pem").expanduser()), "/abs/k.pem")
    assert ClientTls.of_gateway({"tls": None}, tmp_path) is None


def test_tls_failures_become_messages_that_name_the_setting() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    wrapped = httpx.ConnectError("boom")
    wrapped.__cause__ = verify
    refused = tls_refusal("https://gw:8443", wrapped)
    assert refused is not None and "does not trust" in refused.message and "tls.ca_file" in refused.hint
    alert = httpx.ReadError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    alert.__context__ = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    required = tls_refusal("https://gw:8443", alert)
    assert required is not None and "requires a client certificate" in required.message
    assert tls_refusal("https://gw:8443", httpx.ConnectError("connection refused")) is None


def test_the_connection_workers_depend_on_changes_with_the_url_and_their_files(tmp_path: Path) -> None:
    files = make_pki(tmp_path)
    from gpuform.gateway.tls import connection

    assert connection(None, "http://gw:8080") == ""  # plain HTTP: worker revisions stay the endpoint's
    base = connection(_tls(files), "https://gw:8443")
    assert base.startswith("tls-") and base == connection(_tls(files), "https://gw:8443")
    assert connection(_tls(files), "https://gw2:8443") != base
    assert connection(_tls(files, mtls=False), "https://gw:8443") != base
