"""Running the gateway on a pool host: its configuration and the credentials for the pools it drives."""

from __future__ import annotations

import os
import posixpath

from gpuform.config.schema import PoolBase
from gpuform.providers.common.shell import Shell
from gpuform.spec import RuntimeConfig


def remote_config(config: RuntimeConfig, conn: Shell, gdir: str) -> RuntimeConfig:
    """The gateway's runtime configuration as the host sees it: data under ``gdir``, and the SSH keys and
    known_hosts of every pool it drives copied there (mode 0600). The declared settings stay as written
    (they are what refresh compares); the gateway drives its pools from ``host_pools``."""
    creds = posixpath.join(gdir, "creds")
    conn.run(["mkdir", "-p", creds])
    conn.run(["chmod", "700", creds])
    pools = {name: _with_credentials(conn, creds, name, pool) for name, pool in config.pools.items()}
    return config.on_host(data_dir=gdir, state_dir=gdir, config_dir=gdir, host_pools=pools)


def _with_credentials(conn: Shell, creds: str, pool_name: str, pool: PoolBase) -> PoolBase:
    """``pool`` with its credential files copied to the host and their paths rewritten."""
    data = pool.model_dump()
    known = data.get("known_hosts")
    if known:
        data["known_hosts"] = _copy(conn, creds, f"{pool_name}.known_hosts", str(known))
    for host in data.get("hosts") or []:
        if host.get("identity_file"):
            host["identity_file"] = _copy(conn, creds, f"{pool_name}.identity_file", str(host["identity_file"]))
    return type(pool).model_validate(data)


def _copy(conn: Shell, creds: str, prefix: str, path: str) -> str:
    local = os.path.expanduser(path)
    if not os.path.exists(local):
        return path
    remote = posixpath.join(creds, f"{prefix}.{os.path.basename(local)}")
    with open(local, "rb") as fh:
        conn.write_file(remote, fh.read(), mode=0o600)
    return remote
