"""The CLI's client for the gateway's admin API (``/admin/...``, admin key required)."""

from __future__ import annotations

import functools
import os
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import certifi
import httpx

from gpuform.config.tls import resolve
from gpuform.errors import GatewayError
from gpuform.gateway.history import MAX_LIMIT
from gpuform.spec import EndpointPut, EndpointSpec
from gpuform.util.hashing import deployment_id


@dataclass(frozen=True)
class ClientTls:
    """How gpuform's CLI verifies a gateway over HTTPS (``ca_file``: a private CA instead of the public roots)
    and the certificate it presents under mTLS. Paths are absolute on this machine."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def of_gateway(cls, attributes: Mapping[str, Any], config_dir: Path) -> ClientTls | None:
        """From a gateway's recorded attributes (``tls``: paths relative to the configuration directory)."""
        tls = attributes.get("tls")
        if not isinstance(tls, Mapping):
            return None

        def path(field: str) -> str | None:
            value = tls.get(field)
            return str(resolve(config_dir, str(value))) if value else None

        return cls(path("ca_file"), path("client_cert_file"), path("client_key_file"))


@functools.cache
def _tls(tls: ClientTls | None = None) -> ssl.SSLContext:
    """One TLS context per setting for every client (building one reads the CA bundle: ~3 ms, once per client
    otherwise). Raises GatewayError when a file cannot be loaded."""
    if tls is None:
        return httpx.create_ssl_context(trust_env=False)
    try:
        context = ssl.create_default_context(cafile=tls.ca_file or certifi.where())  # certifi: as httpx does
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"cannot load the gateway's TLS files for this client ({exc})",
                           "Check tls.ca_file, tls.client_cert_file and tls.client_key_file of the gateway in the "
                           "configuration (paths relative to its directory); `gpuform validate` checks them.") from exc
    return context


class AdminClient:
    """Thread-safe (one connection pool). ``shared``: owned by whoever made it (an operation's workspace), so
    leaving a ``with`` block does not close it. ``tls``: how to verify the gateway over HTTPS (default: the
    public roots, certifi's)."""

    def __init__(self, base_url: str, admin_key: str | None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None, shared: bool = False,
                 tls: ClientTls | None = None, fallbacks: tuple[str, ...] = ()) -> None:
        self.base_url = base_url.rstrip("/")
        self.fallbacks = tuple(u.rstrip("/") for u in fallbacks if u.rstrip("/") != self.base_url)
        self.shared = shared
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, trust_env=False,
                                  transport=transport, verify=_tls(tls),
                                  limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.shared:
            self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; a connection the gateway refused (or that timed out connecting: nothing was sent) is tried
        again at each fallback URL in turn (the gateway's other replicas)."""
        bases = (self.base_url, *self.fallbacks)
        for i, base in enumerate(bases):
            try:
                return self._http.request(method, path if i == 0 else base + path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if i + 1 < len(bases) and tls_refusal(base, exc) is None:
                    continue
                raise self._unreachable(base, exc) from exc
            except httpx.HTTPError as exc:
                raise self._unreachable(base, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _unreachable(self, base: str, exc: httpx.HTTPError) -> GatewayError:
        tried = f" (and its other replicas {', '.join(self.fallbacks)})" if self.fallbacks else ""
        return tls_refusal(base, exc) or GatewayError(
            f"cannot reach the gateway at {self.base_url}{tried} ({type(exc).__name__}: {exc})",
            "Check that it runs (`gpuform status`); `gpuform apply` starts it again.")

    def _json(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        return self._checked(self._request(method, path, **kwargs), method, path, ok)

    def _checked(self, resp: httpx.Response, method: str, path: str, ok: tuple[int, ...] = (200,)) -> Any:
        """The body of an answer in ``ok``; raises GatewayError naming the answer otherwise."""
        if resp.status_code == 401:
            raise GatewayError(f"the gateway at {self.base_url} refused the admin key",
                               "The admin key kept with the state (secret gateway.NAME.admin_key) does not match "
                               "the running gateway; `gpuform apply -replace gateway.NAME` restarts it with the "
                               "current key.")
        if resp.status_code not in ok:
            hint = ("`gpuform status` lists the endpoints and workers the gateway has." if resp.status_code < 500 else
                    "The gateway failed; see gateway.log in its directory (local pool: "
                    "~/.local/share/gpuform/deployments/LINEAGE/local/POOL/gateways/NAME/, or under GPUFORM_DATA_DIR; "
                    "bare metal: gateways/NAME under the pool's data_dir on its "
                    "host; docker: `docker logs` of its container).")
            raise GatewayError(f"{method} {path} answered {resp.status_code}: {_error_text(resp)}", hint)
        return resp.json() if resp.content else None

    def healthy(self) -> dict[str, Any] | None:
        """The gateway's /healthz, or None when nothing healthy answers. Raises GatewayError when TLS fails
        (an untrusted certificate, or a client certificate refused or missing): waiting would not mend it."""
        try:
            resp = self._http.get("/healthz", timeout=2.0)
        except httpx.HTTPError as exc:
            refused = tls_refusal(self.base_url, exc)
            if refused is not None:
                raise refused from exc
            return None
        return resp.json() if resp.status_code == 200 else None

    def wait_healthy(self, timeout: float, lineage: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            health = self.healthy()
            if health is not None and (lineage is None or health.get("deployment") == deployment_id(lineage)):
                return health
            if time.monotonic() > deadline:
                raise GatewayError(f"the gateway at {self.base_url} did not become healthy in {timeout:.0f}s",
                                   "Read its log (under the state directory) for the reason.")
            time.sleep(0.1)

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/admin/info")
        return result

    def put_endpoint(self, name: str, spec: EndpointSpec, secret_env: dict[str, str]) -> dict[str, Any]:
        body = EndpointPut(spec=spec, secret_env=secret_env).model_dump(mode="json")
        result: dict[str, Any] = self._json("PUT", f"/admin/endpoints/{name}", json=body)
        return result

    def get_endpoint(self, name: str) -> dict[str, Any] | None:
        resp = self._request("GET", f"/admin/endpoints/{name}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise GatewayError(f"GET /admin/endpoints/{name} answered {resp.status_code}: {_error_text(resp)}",
                               "See the gateway log.")
        result: dict[str, Any] = resp.json()
        return result

    def list_endpoints(self) -> dict[str, dict[str, Any]]:
        """Every endpoint registered with the gateway: name -> {"spec", "revision"}."""
        result: dict[str, dict[str, Any]] = self._json("GET", "/admin/endpoints")["endpoints"]
        return result

    def delete_endpoint(self, name: str, drain_timeout: float) -> None:
        self._json("DELETE", f"/admin/endpoints/{name}", ok=(200, 404),
                   params={"drain_timeout": drain_timeout}, timeout=drain_timeout + 30)

    def reload(self) -> list[str] | None:
        """Ask the gateway to re-read its configuration file (hot reload): the fields it took, or None when it
        cannot (a change that needs a restart, or a gateway older than hot reload)."""
        resp = self._request("POST", "/admin/reload")
        if resp.status_code in (404, 405, 409):
            return None
        found: dict[str, Any] = self._checked(resp, "POST", "/admin/reload")
        return [str(f) for f in found.get("reloaded") or []]

    def ledger(self) -> list[dict[str, Any]]:
        """Every ledger row the gateway has."""
        return list(self._json("GET", "/admin/ledger")["entries"])

    def restore_ledger(self, entries: list[dict[str, Any]], batch: int = 2000) -> int:
        """Give the gateway a predecessor's ledger rows (in batches under the admin body limit); how many it
        added (rows it has already are not counted twice)."""
        added = 0
        for start in range(0, len(entries), batch):
            added += int(self._json("POST", "/admin/ledger", json={"entries": entries[start:start + batch]})["added"])
        return added

    def backup_to(self, dest: Path) -> int:
        """Download a consistent copy of the gateway's database into ``dest`` (mode 0600, written whole or
        not at all); returns its size in bytes."""
        tmp = dest.with_name(dest.name + ".part")
        try:
            self._download("/admin/backup", tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dest)
        return dest.stat().st_size

    def _download(self, path: str, tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh, self._http.stream("GET", path, timeout=None) as resp:
                if resp.status_code != 200:
                    resp.read()
                    self._checked(resp, "GET", path)
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except httpx.HTTPError as exc:
            raise GatewayError(f"the download of {path} from {self.base_url} was cut short "
                               f"({type(exc).__name__}: {exc})",
                               "Check that the gateway runs (`gpuform status`) and try again.") from exc

    def restore_from(self, src: Path) -> dict[str, Any]:
        """Upload a backup for the gateway to restore (it restarts onto it)."""
        with open(src, "rb") as fh:
            found: dict[str, Any] = self._json("POST", "/admin/restore", ok=(202,), content=_chunks(fh),
                                               headers={"Content-Type": "application/vnd.sqlite3"}, timeout=None)
        return found

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/admin/status")
        return result

    def get(self, path: str, **params: Any) -> Any:
        return self._json("GET", path, params=params)

    def request_history(self, endpoint: str | None, query: dict[str, Any],
                        wanted: int | None) -> Iterator[dict[str, Any]]:
        """Finished requests of ``endpoint`` (None: of every endpoint; ``query``: status, since), newest first, a
        page at a time, until ``wanted`` rows (None: all) or the history ends."""
        path = "/admin/requests" if endpoint is None else f"/admin/endpoints/{endpoint}/requests"
        before: float | None = None
        given = 0
        while wanted is None or given < wanted:
            page = min(MAX_LIMIT, (wanted - given) if wanted is not None else MAX_LIMIT)
            params = {**query, "limit": page, **({"before": before} if before is not None else {})}
            rows = self.get(path, **params)["requests"]
            yield from rows
            given += len(rows)
            if len(rows) < page:
                return
            before = rows[-1]["created_at"]


CA_HINT = ("If a private CA signed the gateway's certificate, set tls.ca_file of the gateway to that CA's "
           "certificate (PEM); the certificate must also name the host of advertise_url. docs/security.md (TLS).")
MTLS_HINT = ("The gateway asks for a client certificate (tls.client_ca_file): set tls.client_cert_file and "
             "tls.client_key_file of the gateway to a certificate that CA signed. docs/security.md (TLS).")


def tls_refusal(url: str, exc: BaseException) -> GatewayError | None:
    """A TLS failure behind ``exc`` as a GatewayError saying what to fix (None when it is not one)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return GatewayError(f"the gateway at {url} presented a certificate this machine does not trust "
                            f"({cause.verify_message})", CA_HINT)
    text = str(cause or exc).upper()
    if "CERTIFICATE_REQUIRED" in text or "CERTIFICATE REQUIRED" in text:
        return GatewayError(f"the gateway at {url} refused this client: it requires a client certificate", MTLS_HINT)
    if isinstance(cause, ssl.SSLError) and ("UNKNOWN_CA" in text or "BAD_CERTIFICATE" in text):
        return GatewayError(f"the gateway at {url} refused this client's certificate ({cause.reason})", MTLS_HINT)
    return None


def _chunks(fh: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:300]
