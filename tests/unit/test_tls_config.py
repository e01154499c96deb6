"""The gateway's ``tls:`` block: its files are checked where they are declared (file:line and field, for a
missing file, a directory, a file that holds no PEM, a key that does not match, an expired certificate, a
certificate for another host), impossible combinations are refused, and a renewed certificate plans an
update of the gateway."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gpuform.config.load import load
from gpuform.engine.operations import tls_digests
from gpuform.errors import ConfigError
from gpuform.plan.planner import plan
from gpuform.resources.desired import build
from gpuform.spec import GatewaySettings
from gpuform.state.model import ResourceState, State
from tests.conftest import write_config
from tests.tlsfiles import issue, make_ca, make_pki, reissue_server, write_cert, write_key

pytestmark = pytest.mark.unit

CONFIG = """
pools:
  lab: {provider: local}
gateway:
  main:
    pool: lab
    listen: 127.0.0.1:8443
    tls:
      cert_file: CERT
      key_file: KEY
EXTRA"""


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_pki(tmp_path)


def _write(tmp_path: Path, cert: str = "tls/server.pem", key: str = "tls/server-key.pem", extra: str = "") -> None:
    write_config(tmp_path, CONFIG.replace("CERT", cert).replace("KEY", key).replace("EXTRA", extra))


def _errors(tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    return [d.render() for d in info.value.diagnostics]


def test_a_valid_tls_block_loads_and_advertises_https(tmp_path: Path, pki: dict[str, Path]) -> None:
    _write(tmp_path, extra="      ca_file: tls/ca.pem\n")
    config = load(tmp_path, env={})
    assert config.warnings == []
    gw = config.gateways["main"]
    assert gw.tls is not None and gw.tls.ca_file == "tls/ca.pem"
    assert gw.resolved_advertise_url() == "https://127.0.0.1:8443"


def test_a_missing_file_is_located_at_its_field(tmp_path: Path, pki: dict[str, Path]) -> None:
    _write(tmp_path, cert="tls/nope.pem")
    (err,) = _errors(tmp_path)
    assert re.search(r"gpuform\.yaml:8:\d+: error: tls\.cert_file: .*tls/nope\.pem does not exist", err), err
    assert "docs/security.md" in err


def test_a_directory_and_a_file_without_pem_are_refused(tmp_path: Path, pki: dict[str, Path]) -> None:
    (tmp_path / "notpem.txt").write_text("hello")
    _write(tmp_path, cert="tls", key="notpem.txt")
    errors = _errors(tmp_path)
    assert any(re.search(r"gpuform\.yaml:8:\d+: error: tls\.cert_file: .* is a directory", e) for e in errors), errors
    assert any(re.search(r"gpuform\.yaml:9:\d+: error: tls\.key_file: notpem\.txt holds no PEM private key", e)
               for e in errors), errors


def test_a_key_that_does_not_match_the_certificate(tmp_path: Path, pki: dict[str, Path]) -> None:
    _write(tmp_path, key="tls/client-key.pem")
    (err,) = _errors(tmp_path)
    assert re.search(r"gpuform\.yaml:9:\d+: error: tls\.key_file: the key in tls/client-key\.pem does not match "
                    r"the certificate in tls/server\.pem", err), err


def test_an_expired_certificate(tmp_path: Path, pki: dict[str, Path]) -> None:
    ca = make_ca("ca")
    old = issue(ca, "gateway", ("127.0.0.1",), expired=True)
    write_cert(tmp_path / "old.pem", old)
    write_key(tmp_path / "old-key.pem", old)
    _write(tmp_path, cert="old.pem", key="old-key.pem")
    (err,) = _errors(tmp_path)
    assert re.search(r"gpuform\.yaml:8:\d+: error: tls\.cert_file: the certificate CN=gateway expired on ", err), err


def test_a_certificate_for_another_host_is_a_warning(tmp_path: Path) -> None:
    make_pki(tmp_path, names=("gpu1.lab",))
    _write(tmp_path)
    (warning,) = [d.render() for d in load(tmp_path, env={}).warnings]
    assert re.search(r'gpuform\.yaml:8:\d+: warning: tls\.cert_file: the certificate does not name "127\.0\.0\.1"',
                    warning), warning


def test_mtls_needs_a_client_certificate_signed_by_the_client_ca(tmp_path: Path, pki: dict[str, Path]) -> None:
    _write(tmp_path, extra="      client_ca_file: tls/client-ca.pem\n")
    (err,) = _errors(tmp_path)
    assert "set client_cert_file and client_key_file" in err
    _write(tmp_path, extra="      client_ca_file: tls/other-ca.pem\n      client_cert_file: tls/client.pem\n"
                           "      client_key_file: tls/client-key.pem\n")
    (warning,) = [d.render() for d in load(tmp_path, env={}).warnings]
    assert "tls.client_cert_file: no CA in tls/other-ca.pem signed" in warning
    assert "the gateway would refuse gpuform's own CLI and workers" in warning


@pytest.mark.parametrize(("extra", "message"), [
    ("    advertise_url: http://127.0.0.1:8443\n", "must start with https://"),
    ("    proxy_protocol: true\n", "proxy_protocol cannot be combined with tls"),
])
def test_combinations_tls_cannot_serve(tmp_path: Path, pki: dict[str, Path], extra: str, message: str) -> None:
    _write(tmp_path, extra=extra)
    assert any(message in e for e in _errors(tmp_path))


def test_validate_needs_no_environment_for_an_unknown_path(tmp_path: Path, pki: dict[str, Path]) -> None:
    _write(tmp_path, cert="${env.CERT}")
    assert load(tmp_path, env={}, require_env=False).gateways["main"].tls is not None


def test_a_renewed_certificate_plans_an_update_of_the_gateway(tmp_path: Path, pki: dict[str, Path]) -> None:
    _write(tmp_path)
    config = load(tmp_path, env={})
    desired = build(config, "L", tls_digests=tls_digests(config))
    attrs = desired["gateway.main"].attributes
    assert attrs["tls"]["content"].startswith("sha256:")
    assert GatewaySettings.model_validate(attrs).tls is not None  # what the gateway is started with takes it
    state = State(lineage="L", serial=1)
    for address, d in desired.items():
        state.resources[address] = ResourceState(address, d.kind, d.name, d.provider,
                                                  json.loads(json.dumps(d.attributes)))
    assert all(c.action == "no-op" for c in plan(desired, state, None).changes)
    reissue_server(pki)
    renewed = build(config, "L", tls_digests=tls_digests(config))
    (change,) = [c for c in plan(renewed, state, None).changes if c.address == "gateway.main"]
    assert change.action == "update"
    assert change.before["tls"]["content"] != change.after["tls"]["content"]


def test_a_gateway_recorded_before_tls_plans_no_change(tmp_path: Path) -> None:
    write_config(tmp_path, "pools:\n  lab: {provider: local}\ngateway:\n  main: {pool: lab}\n")
    desired = build(load(tmp_path, env={}), "L")
    state = State(lineage="L", serial=1)
    for address, d in desired.items():
        attrs = {k: v for k, v in json.loads(json.dumps(d.attributes)).items() if k != "tls"}
        state.resources[address] = ResourceState(address, d.kind, d.name, d.provider, attrs)
    assert all(c.action == "no-op" for c in plan(desired, state, None).changes)


@pytest.mark.parametrize("example", ["baremetal", "docker-ssh"])
def test_the_examples_commented_tls_block_is_valid_once_uncommented(tmp_path: Path, example: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "examples" / example / "gpuform.yaml").read_text()
    assert "    # tls:\n" in text
    text = re.sub(r"\n    # (tls:|  \w+_file: .*)", lambda m: "\n    " + m.group(1), text)
    text = text.replace('advertise_url: "http://', 'advertise_url: "https://')
    (tmp_path / "gpuform.yaml").write_text(text)
    (tmp_path / "assets").mkdir()
    made = make_pki(tmp_path, names=("gpu1.lab",))
    for name, key in [("gateway", "cert"), ("gateway-key", "key"), ("ca", "ca"), ("clients-ca", "client_ca"),
                      ("gpuform", "client_cert"), ("gpuform-key", "client_key")]:
        (tmp_path / "tls" / f"{name}.pem").write_bytes(made[key].read_bytes())
    config = load(tmp_path, env={"GPUFORM_API_KEY": "k"})
    assert config.warnings == []
    tls = config.gateways["main"].tls
    assert tls is not None and tls.client_ca_file == "tls/clients-ca.pem" and tls.ca_file == "tls/ca.pem"
