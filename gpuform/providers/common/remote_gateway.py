"""Running the gateway on a pool host: its configuration, the credentials for the pools it drives and its TLS
files."""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path

from gpuform.config.schema import GatewayTls, PoolBase, SSHHost
from gpuform.errors import ProviderError
from gpuform.providers.common import sshconfig
from gpuform.providers.common.shell import Shell
from gpuform.spec import RuntimeConfig


def remote_config(config: RuntimeConfig, conn: Shell, gdir: str) -> RuntimeConfig:
    """The gateway's runtime configuration as the host sees it: data under ``gdir``, and the SSH keys,
    known_hosts and resolved ssh_config of every pool it drives copied there (mode 0600). The declared settings
    stay as written (they are what refresh compares); the gateway drives its pools from ``host_pools``."""
    creds = posixpath.join(gdir, "creds")
    conn.run(["mkdir", "-p", creds])
    conn.run(["chmod", "700", creds])
    config_dir = Path(config.config_dir)
    pools = {name: _with_credentials(conn, creds, name, pool, config_dir) for name, pool in config.pools.items()}
    return config.on_host(data_dir=gdir, state_dir=gdir, config_dir=gdir, host_pools=pools,
                          host_tls=ship_tls(conn, config, gdir))


TLS_NAMES = {"cert_file": "cert.pem", "key_file": "key.pem", "client_ca_file": "client-ca.pem", "ca_file": "ca.pem",
             "client_cert_file": "client-cert.pem", "client_key_file": "client-key.pem"}


def ship_tls(conn: Shell, config: RuntimeConfig, gdir: str) -> GatewayTls | None:
    """Copy the gateway's TLS files (``config.host_tls``: paths on this machine) into ``gdir/tls`` on the host,
    each mode 0600 in a 0700 directory; their paths there (None without TLS)."""
    if config.host_tls is None:
        return None
    directory = posixpath.join(gdir, "tls")
    conn.run(["mkdir", "-p", directory])
    conn.run(["chmod", "700", directory])
    placed: dict[str, str] = {}
    for field, path in config.host_tls.files().items():
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ProviderError(f"cannot read tls.{field} {path}: {exc.strerror}", "Restore the file (plan checks "
                                "it), then apply again.", f"gateway.{config.name}") from exc
        placed[field] = posixpath.join(directory, TLS_NAMES[field])
        conn.write_file(placed[field], data, mode=0o600)
    return GatewayTls.model_validate(placed)


def _with_credentials(conn: Shell, creds: str, pool_name: str, pool: PoolBase, config_dir: Path) -> PoolBase:
    """``pool`` with its credential files copied to the host and their paths rewritten."""
    data = pool.model_dump()
    known = data.get("known_hosts")
    if known:
        data["known_hosts"] = _copy(conn, creds, f"{pool_name}.known_hosts", str(known))
    if "ssh_config" in data:
        data["ssh_config"] = _ssh_config(conn, creds, pool_name, pool, config_dir)
    for host in data.get("hosts") or []:
        if host.get("identity_file"):
            host["identity_file"] = _copy(conn, creds, f"{pool_name}.identity_file", str(host["identity_file"]))
    return type(pool).model_validate(data)


def _ssh_config(conn: Shell, creds: str, pool_name: str, pool: PoolBase, config_dir: Path) -> str:
    """The pool's hosts as resolved here (HostName, Port, User, keys, jump hosts) written as an ssh_config on
    the gateway's host, the keys it names copied beside it: the gateway reaches them as this machine does."""
    ssh_hosts = [h for h in getattr(pool, "hosts", [])
                 if isinstance(h, SSHHost) and not getattr(h, "docker_host", None)]
    defaults = sshconfig.Defaults(str(getattr(pool, "known_hosts", "")), False, 10.0)
    targets = sshconfig.resolve_all(ssh_hosts, sshconfig.config_path(getattr(pool, "ssh_config", None), config_dir),
                                    defaults, f"pool.{pool_name}")

    def copied(path: str) -> str:
        return _copy(conn, creds, f"{pool_name}.ssh-{hashlib.sha256(path.encode()).hexdigest()[:8]}", path)

    text = sshconfig.render([(h.address, t) for h, t in zip(ssh_hosts, targets, strict=True)], copied)
    remote = posixpath.join(creds, f"{pool_name}.ssh_config")
    conn.write_file(remote, text.encode(), mode=0o600)
    return remote


def _copy(conn: Shell, creds: str, prefix: str, path: str) -> str:
    local = os.path.expanduser(path)
    if not os.path.exists(local):
        return path
    remote = posixpath.join(creds, f"{prefix}.{os.path.basename(local)}")
    with open(local, "rb") as fh:
        conn.write_file(remote, fh.read(), mode=0o600)
    return remote
