"""Helpers for the team tests: configuration directories (clones) run as separate ``gpuform`` processes, the
pool and gateway blocks for a ``local`` pool or the bare-metal test host h1, and what a lineage leaves behind."""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpuform.util import procs
from tests.conftest import run_gpuform, write_config
from tests.contract.hosts import load_hosts, ssh

H1 = "10.77.0.11"
PROVIDERS = ["local", pytest.param("baremetal", marks=[pytest.mark.ssh, pytest.mark.slow])]


@dataclass
class Clone:
    """A configuration directory (a git clone) and who runs gpuform in it, with their own HOME."""

    directory: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 300, extra: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        return run_gpuform("-C", str(self.directory), *args, env={**self.env, **(extra or {})}, timeout=timeout)

    def ok(self, *args: str, timeout: float = 300, extra: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, timeout=timeout, extra=extra)
        assert result.returncode == 0, f"gpuform {' '.join(args)}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    def write(self, text: str) -> None:
        write_config(self.directory, text)


def clone(tmp_path: Path, name: str, env: dict[str, str] | None = None) -> Clone:
    home = tmp_path / f"home-{name}"
    (home / ".config").mkdir(parents=True)
    directory = tmp_path / f"clone-{name}"
    directory.mkdir()
    return Clone(directory, {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **(env or {})})


def pool_and_gateway(provider: str, port: str, api_keys: str = "{test: test-key}") -> str:
    """A pool ``p`` (this machine, or h1 over SSH) and gateway ``main`` listening on ``port`` (text: a number
    or an interpolation)."""
    if provider == "local":
        pool, listen, advertise = "provider: local", f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    else:
        info = load_hosts()
        key, known = info["ssh"]["identity_file"], info["ssh"]["known_hosts"]
        pool = f"provider: baremetal\n    known_hosts: {known}\n    hosts: [{{address: {H1}, identity_file: {key}, name: h1}}]"
        listen, advertise = f"0.0.0.0:{port}", f"http://{H1}:{port}"
    return textwrap.dedent("""
        pools:
          p:
            {pool}
            price_per_gpu_second: {{cpu: 0.001}}
        gateway:
          main:
            pool: p
            listen: "{listen}"
            advertise_url: "{advertise}"
            api_keys: {api_keys}
            timings: {{lease_timeout: 5s, ping_interval: 1s, reconcile_interval: 0.3s, drain_timeout: 3s,
                      take_timeout: 2s, start_backoff: 1s, start_backoff_max: 4s}}
        """).lstrip().format(pool=pool, listen=listen, advertise=advertise, api_keys=api_keys)


def gateway_url(provider: str, port: int) -> str:
    return f"http://{'127.0.0.1' if provider == 'local' else H1}:{port}"


def leftovers(provider: str, lineage: str, data_root: Path) -> list[str]:
    """Processes and directories of ``lineage`` still there (after destroy there must be none)."""
    if provider == "local":
        found = [f"process {p}" for p in procs.find_by_labels({"gpuform.lineage": lineage})]
        workers = data_root / "deployments" / lineage / "local" / "p" / "workers"
        return found + ([str(p) for p in workers.glob("*.json")] if workers.exists() else [])
    short = f"lineage-{lineage[:8]}"  # every process gpuform starts on a host runs from the lineage's directory
    running = ssh(H1, "sh", "-c", f"pgrep -af '[l]{short[1:]}' || true").stdout.splitlines()
    kept = ssh(H1, "test", "-e", f"/var/lib/gpuform/{short}", check=False).returncode == 0
    return [f"h1: {line}" for line in running if line.strip()] + ([f"h1: /var/lib/gpuform/{short}"] if kept else [])
