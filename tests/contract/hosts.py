"""The test hosts made by .ci/setup/testhosts.sh (h1, h2: own sshd, dockerd and files), and per-provider
configurations and helpers that reach behind gpuform's back."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuform.util import procs
from tests.conftest import pool_dir

HOSTS_JSON = Path("/var/lib/gpuform-test/hosts.json")
PROVIDERS = ["local", "baremetal", "docker"]


def load_hosts() -> dict:  # type: ignore[type-arg]
    if not HOSTS_JSON.exists():
        if os.environ.get("CI"):
            raise AssertionError("test hosts are missing: .ci/setup/all.sh must run before the tests in CI")
        pytest.skip("test hosts not running (run .ci/setup/all.sh)")
    data: dict = json.loads(HOSTS_JSON.read_text())  # type: ignore[type-arg]
    return data


def host_dir(lineage: str) -> str:
    """A deployment's directory on a test host (the pools' default data_dir, one directory per lineage)."""
    return f"/var/lib/gpuform/lineage-{lineage[:8]}"


def ssh(host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    info = load_hosts()
    return subprocess.run(["ssh", "-F", info["ssh"]["config"], f"root@{host}", shlex.join(argv)],
                          capture_output=True, text=True, check=check, timeout=120)


@dataclass
class Setup:
    provider: str
    workdir: Path
    port: int
    volume_path: str

    @property
    def remote(self) -> bool:
        return self.provider != "local"

    @property
    def gateway_host(self) -> str:
        return "10.77.0.11" if self.remote else "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.gateway_host}:{self.port}"

    def pool_yaml(self, extra_hosts: str = "", pool_extra: str = "") -> str:
        if not self.remote:
            return "pools:\n  p:\n    provider: local\n    price_per_gpu_second: {cpu: 0.001}\n" + pool_extra
        info = load_hosts()
        key, known = info["ssh"]["identity_file"], info["ssh"]["known_hosts"]
        hosts = "".join(f"      - {{address: {h['address']}, identity_file: {key}, name: {h['name']}}}\n"
                        for h in info["hosts"]) + extra_hosts
        out = (f"pools:\n  p:\n    provider: {self.provider}\n    known_hosts: {known}\n"
               f"    price_per_gpu_second: {{cpu: 0.001}}\n    hosts:\n{hosts}")
        if self.provider == "docker":
            out += f"    base_image: {info['base_image']}\n"
        return out + pool_extra

    def config(self, min_workers: int = 1, env_mode: str = "fast", extra_hosts: str = "", pool_extra: str = "",
               endpoint_extra: str = "") -> str:
        listen = f"0.0.0.0:{self.port}" if self.remote else f"127.0.0.1:{self.port}"
        return self.pool_yaml(extra_hosts, pool_extra) + textwrap.dedent(f"""
            volumes:
              weights: {{pool: p, path: {self.volume_path}, source: ./model}}
            policies:
              office: {{schedule: [{{cron: "0 8 * * 1-5", duration: 1h, min_workers: 0}}]}}
            gateway:
              main:
                pool: p
                listen: {listen}
                advertise_url: {self.url}
                api_keys: {{test: test-key}}
                logs: {{max_size: 4096, max_files: 2}}
                timings: {{lease_timeout: 5s, ping_interval: 1s, reconcile_interval: 0.3s, drain_timeout: 5s,
                          take_timeout: 2s, start_backoff: 1s, start_backoff_max: 4s}}
            endpoints:
              echo:
                pool: p
                worker: {{template: echo, env: {{MODE: {env_mode}}}}}
                model: {{name: tiny, volume: weights}}
                policy: office
                scaling: {{min_workers: {min_workers}, max_workers: 2, idle_timeout: 30s}}
            """) + endpoint_extra

    # ---- reaching behind gpuform's back ------------------------------------------------------------

    def hosts(self) -> list[str]:
        return [h["address"] for h in load_hosts()["hosts"]] if self.remote else ["localhost"]

    def remove_staged_file(self, rel: str) -> None:
        if self.remote:
            ssh("10.77.0.12", "rm", "-f", f"{self.volume_path}/{rel}")
        else:
            Path(self.volume_path, rel).unlink()

    def staged(self, host: str, rel: str) -> bool:
        if not self.remote:
            return Path(self.volume_path, rel).exists()
        return ssh(host, "test", "-f", f"{self.volume_path}/{rel}", check=False).returncode == 0

    def stop_gateway(self, lineage: str) -> None:
        if self.provider == "local":
            for pid in procs.find_by_labels({"gpuform.lineage": lineage, "gpuform.address": "gateway.main"}):
                procs.terminate(pid, 10)
        elif self.provider == "docker":
            ssh("10.77.0.11", "sh", "-c", f"docker rm -f $(docker ps -aq --filter label=gpuform.lineage={lineage} "
                                          "--filter label=gpuform.address=gateway.main)")
        else:
            # this deployment's supervisor, then its gateway (the test hosts share the machine's processes: a
            # pattern without the lineage would kill every gateway on it, other test runs' too)
            ssh("10.77.0.11", "sh", "-c", f"pkill -f '[g]puform[.]lineage={lineage} --label gpuform[.]address=gateway"
                                          f"[.]main' ; sleep 1; pkill -f '[l]ineage-{lineage[:8]}/gateways/main/"
                                          "config[.]json' ; true")

    def rotated_gateway_log(self) -> bool:
        """Whether the gateway's log has a rotated file beside it, where its provider keeps it."""
        lineage = json.loads((self.workdir / "state" / "gpuform.state.json").read_text())["lineage"]
        if self.provider == "local":
            return (pool_dir(self.workdir, "p") / "gateways" / "main" / "gateway.log.1").exists()
        if self.provider == "docker":
            path = ssh("10.77.0.11", "docker", "inspect", "-f", "{{.LogPath}}", f"gpuform-gateway-{lineage[:8]}-main",
                       check=False).stdout.strip()
        else:
            path = f"{host_dir(lineage)}/gateways/main/gateway.log"
        return bool(path) and ssh("10.77.0.11", "test", "-e", f"{path}.1", check=False).returncode == 0

    def rotated_worker_log(self, worker_id: str) -> bool:
        """Whether the worker's log has a rotated file (NAME.1) beside it, where its provider keeps it."""
        if self.provider == "local":
            lineage = json.loads((self.workdir / "state" / "gpuform.state.json").read_text())["lineage"]
            workers = Path(os.environ["GPUFORM_DATA_DIR"]) / "deployments" / lineage / "local" / "p" / "workers"
            return (workers / f"{worker_id}.log.1").exists() and (workers / f"{worker_id}.log").stat().st_size < 8192
        for host in self.hosts():
            if self.provider == "docker":
                path = ssh(host, "docker", "inspect", "-f", "{{.LogPath}}", f"gpuform-w-{worker_id}",
                           check=False).stdout.strip()
            else:
                path = ssh(host, "sh", "-c", f"ls /var/lib/gpuform/lineage-*/logs/{worker_id}.log 2>/dev/null || true"
                           ).stdout.strip()
            if path and ssh(host, "test", "-e", f"{path}.1", check=False).returncode == 0:
                return True
        return False

    def leftovers(self, lineage: str) -> list[str]:
        """Anything of this lineage still running or staged after destroy."""
        found = []
        if self.provider == "local":
            found += [f"process {p}" for p in procs.find_by_labels({"gpuform.lineage": lineage})]
            # the state is empty after destroy: the pool's directory is found from the lineage, as gpuform does
            workers = Path(os.environ["GPUFORM_DATA_DIR"]) / "deployments" / lineage / "local" / "p" / "workers"
            found += [str(p) for p in workers.glob("*.json")] if workers.exists() else []
        elif self.provider == "docker":
            for host in self.hosts():
                out = ssh(host, "docker", "ps", "-aq", "--filter", f"label=gpuform.lineage={lineage}").stdout.split()
                found += [f"container {c} on {host}" for c in out]
        else:
            for host in self.hosts():
                pattern = f"[l]ineage-{lineage[:8]}"  # every process gpuform started runs from the lineage's dir
                out = ssh(host, "sh", "-c", f"pgrep -af '{pattern}' || true").stdout.strip()
                found += [f"{host}: {line}" for line in out.splitlines() if line]
                if ssh(host, "test", "-e", host_dir(lineage), check=False).returncode == 0:
                    found.append(f"{host}: {host_dir(lineage)}")
        for host in self.hosts():
            if self.staged(host, "weights.bin"):
                found.append(f"staged file on {host}")
        return found
