"""Certificates made at test time (cryptography): a CA, a server certificate for the test addresses, a client
CA with a client certificate (mTLS), and an unrelated CA (the wrong one)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(common: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1)).not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def issue(ca: Issued, common: str, names: tuple[str, ...] = (), client: bool = False,
          expired: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = (NOW - datetime.timedelta(days=10), NOW - datetime.timedelta(days=1)) if expired else \
        (NOW - datetime.timedelta(hours=1), NOW + datetime.timedelta(days=30))
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                     else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_cert(path: Path, issued: Issued) -> Path:
    path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_key(path: Path, issued: Issued) -> Path:
    path.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def make_pki(directory: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """Files in ``directory/tls``: ca.pem, server.pem + server-key.pem (for ``names``), client-ca.pem,
    client.pem + client-key.pem, other-ca.pem (a CA that signed nothing here)."""
    out = directory / "tls"
    out.mkdir(parents=True, exist_ok=True)
    ca, client_ca = make_ca("gpuform test CA"), make_ca("gpuform test client CA")
    server, client = issue(ca, "gateway", names), issue(client_ca, "gpuform-cli", client=True)
    return {"ca": write_cert(out / "ca.pem", ca), "cert": write_cert(out / "server.pem", server),
            "key": write_key(out / "server-key.pem", server), "client_ca": write_cert(out / "client-ca.pem", client_ca),
            "client_cert": write_cert(out / "client.pem", client), "client_key": write_key(out / "client-key.pem", client),
            "other_ca": write_cert(out / "other-ca.pem", make_ca("another CA")),
            "ca_key": write_key(out / "ca-key.pem", ca)}


def reissue_server(files: dict[str, Path], names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
    """A new server certificate and key from the same CA, written over the old files."""
    ca_key = serialization.load_pem_private_key(files["ca_key"].read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = Issued(x509.load_pem_x509_certificate(files["ca"].read_bytes()), ca_key)
    server = issue(ca, "gateway", names)
    write_cert(files["cert"], server)
    write_key(files["key"], server)
