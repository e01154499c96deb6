"""Running the gateway on a pool host: its configuration and the credentials for the pools it drives."""

from __future__ import annotations

import copy
import json
import os
import posixpath
from typing import Any

from gpuform.providers.common.ssh import Connection


def remote_config(runtime_config: str, conn: Connection, gdir: str) -> str:
    """The gateway's runtime configuration rewritten for ``gdir`` on the host, with the SSH keys and
    known_hosts of every pool it drives copied there (mode 0600). The declared attributes stay as written
    (they are what refresh compares); the gateway drives its pools from the rewritten ``pools``."""
    config: dict[str, Any] = json.loads(runtime_config)
    creds = posixpath.join(gdir, "creds")
    conn.run(["mkdir", "-p", creds])
    conn.run(["chmod", "700", creds])
    config["pools"] = copy.deepcopy(config["attributes"].get("pools") or {})
    for pool_name, pool in config["pools"].items():
        for key, value in _credential_paths(pool):
            local = os.path.expanduser(value)
            if not os.path.exists(local):
                continue
            remote = posixpath.join(creds, f"{pool_name}.{key}.{os.path.basename(local)}")
            with open(local, "rb") as fh:
                conn.write_file(remote, fh.read(), mode=0o600)
            _replace(pool, key, value, remote)
    config["state_dir"] = gdir
    config["config_dir"] = gdir
    return json.dumps(config, indent=2, sort_keys=True)


def _credential_paths(pool: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    if pool.get("known_hosts"):
        out.append(("known_hosts", str(pool["known_hosts"])))
    for host in pool.get("hosts") or []:
        if host.get("identity_file"):
            out.append(("identity_file", str(host["identity_file"])))
    return out


def _replace(pool: dict[str, Any], key: str, old: str, new: str) -> None:
    if key == "known_hosts":
        pool["known_hosts"] = new
        return
    for host in pool.get("hosts") or []:
        if host.get("identity_file") == old:
            host["identity_file"] = new
