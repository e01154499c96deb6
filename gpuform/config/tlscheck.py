"""The gateway's TLS files, checked where they are declared (``validate`` and ``plan``), so that a missing file,
a key that does not match its certificate or an expired certificate is a located error, not a gateway that
fails to start on its host. ``cryptography`` is imported only when a configuration has a ``tls:`` block.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gpuform.config import schema
from gpuform.config.interpolate import UNKNOWN
from gpuform.config.tls import resolve
from gpuform.diagnostics import Diagnostic, Location, error, warning

if TYPE_CHECKING:
    from gpuform.config.load import Config

MAKE_FILES = "docs/security.md (TLS) shows how to make them with openssl."
EXPIRY_WARNING_DAYS = 14


def check_tls(config: Config) -> list[Diagnostic]:
    """Every gateway's TLS files: readable, PEM, unexpired, keys matching certificates, the certificate naming
    the host of advertise_url, gpuform's client certificate signed by the client CA."""
    out: list[Diagnostic] = []
    for name, gw in config.gateways.items():
        if gw.tls is not None:
            out += _Checker(config, name, gw, gw.tls).run()
    return out


class _Checker:
    def __init__(self, config: Config, name: str, gw: schema.Gateway, tls: schema.GatewayTls) -> None:
        self.config, self.name, self.gw, self.tls = config, name, gw, tls
        self.out: list[Diagnostic] = []

    def where(self, field: str) -> Location | None:
        return self.config.sources.locate(("gateway", self.name, "tls", field))

    def problem(self, field: str, summary: str, hint: str, *, severity: str = "error") -> None:
        make = error if severity == "error" else warning
        self.out.append(make(f"tls.{field}: {summary}", hint, self.where(field), f"gateway.{self.name}"))

    def run(self) -> list[Diagnostic]:
        cert = self.certs("cert_file")
        key = self.key("key_file")
        if cert and key is not None:
            self.matches(cert[0], key, "cert_file", "key_file")
            self.names_host(cert[0])
        client_ca = self.certs("client_ca_file")
        ca = self.certs("ca_file")
        client = self.certs("client_cert_file")
        client_key = self.key("client_key_file")
        if client and client_key is not None:
            self.matches(client[0], client_key, "client_cert_file", "client_key_file")
        if cert and ca:
            self.signed_by(cert, ca, "cert_file", "ca_file", "gpuform's CLI and workers would refuse the gateway")
        if client and client_ca:
            self.signed_by(client, client_ca, "client_cert_file", "client_ca_file",
                           "the gateway would refuse gpuform's own CLI and workers")
        return self.out

    def read(self, field: str) -> bytes | None:
        declared = getattr(self.tls, field)
        if declared is None or UNKNOWN in declared:
            return None
        path = resolve(self.config.directory, declared)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            self.problem(field, f"{path} does not exist", f"Point {field} at the file, relative to the configuration "
                         f"directory or absolute. {MAKE_FILES}")
        except IsADirectoryError:
            self.problem(field, f"{path} is a directory", f"Point {field} at a PEM file.")
        except OSError as exc:
            self.problem(field, f"cannot read {path}: {exc.strerror}",
                         "Make the file readable by the user running gpuform.")
        return None

    def certs(self, field: str) -> list[Any]:
        from cryptography import x509

        data = self.read(field)
        if data is None:
            return []
        try:
            found = x509.load_pem_x509_certificates(data)
        except ValueError:
            self.problem(field, f"{getattr(self.tls, field)} holds no PEM certificate",
                         "Use a PEM file (-----BEGIN CERTIFICATE-----). " + MAKE_FILES)
            return []
        for cert in found:
            self.valid_now(cert, field)
        return found

    def valid_now(self, cert: Any, field: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        subject = cert.subject.rfc4514_string() or "(no subject)"
        until = cert.not_valid_after_utc
        if until <= now:
            self.problem(field, f"the certificate {subject} expired on {until:%Y-%m-%d %H:%M} UTC",
                         "Renew it (a new certificate and key), then plan and apply: the gateway restarts with it.")
        elif (since := cert.not_valid_before_utc) > now:
            self.problem(field, f"the certificate {subject} is not valid before {since:%Y-%m-%d %H:%M} UTC",
                         "Check this machine's clock, or issue the certificate with an earlier start.")
        elif until - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
            self.problem(field, f"the certificate {subject} expires on {until:%Y-%m-%d %H:%M} UTC",
                         "Renew it soon; applying the new files restarts the gateway with them.", severity="warning")

    def key(self, field: str) -> Any | None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        data = self.read(field)
        if data is None:
            return None
        try:
            return load_pem_private_key(data, password=None)
        except TypeError:
            self.problem(field, f"{getattr(self.tls, field)} is encrypted with a passphrase",
                         "The gateway starts unattended: decrypt it (openssl pkey -in KEY -out KEY.plain) and keep "
                         "that file private.")
        except Exception as exc:  # ValueError; UnsupportedAlgorithm for unknown key types
            self.problem(field, f"{getattr(self.tls, field)} holds no PEM private key ({type(exc).__name__})",
                         "Use a PEM file (-----BEGIN PRIVATE KEY-----). " + MAKE_FILES)
        return None

    def matches(self, cert: Any, key: Any, cert_field: str, key_field: str) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        def spki(public: Any) -> bytes:
            return bytes(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))

        if spki(cert.public_key()) != spki(key.public_key()):
            self.problem(key_field, f"the key in {getattr(self.tls, key_field)} does not match the certificate in "
                         f"{getattr(self.tls, cert_field)}", f"Use the key {cert_field}'s certificate was issued for "
                         "(or issue a certificate for this key).")

    def names_host(self, cert: Any) -> None:
        host = urlsplit(self.gw.resolved_advertise_url()).hostname or ""
        if not host or UNKNOWN in host or cert_names_host(cert, host):
            return
        self.problem("cert_file", f'the certificate does not name "{host}", the host of advertise_url',
                     f"Clients verify that name: issue the certificate with subjectAltName DNS:{host} (or IP:{host} "
                     "for an address), or set advertise_url to a name it holds.", severity="warning")

    def signed_by(self, chain: list[Any], cas: list[Any], field: str, ca_field: str, effect: str) -> None:
        if any(_issued_by(cert, ca) for cert in chain for ca in cas) or any(c in cas for c in chain):
            return
        self.problem(field, f"no CA in {getattr(self.tls, ca_field)} signed the certificate in "
                     f"{getattr(self.tls, field)}", f"As declared, {effect}: use a certificate issued by that CA, or "
                     f"put the CA that issued it in {ca_field}.", severity="warning")


def _issued_by(cert: Any, ca: Any) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # cryptography raises ValueError, TypeError or InvalidSignature
        return False
    return True


def cert_names_host(cert: Any, host: str) -> bool:
    """Whether ``cert``'s subjectAltName covers ``host`` (an address by IP entry, a name by DNS entry with one
    leading wildcard label)."""
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return any(_dns_match(pattern, host) for pattern in names.get_values_for_type(x509.DNSName))
    return address in names.get_values_for_type(x509.IPAddress)


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host
