"""TLS with mTLS on a pool host over SSH (h1), bare metal and docker alike: apply copies the certificates and keys
to the gateway's host (keys mode 0600 in 0700 directories), the gateway (a process, or a container) serves HTTPS
and asks for client certificates, the workers it starts on the host (processes, or containers) verify it with the
CA given as ``SSL_CERT_FILE`` and present gpuform's client certificate, a client without one is refused, a
renewed certificate is a planned in-place update, and destroy leaves nothing on the host."""

from __future__ import annotations

import json
import ssl
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import destroy_after_test, free_port, run_gpuform, write_config
from tests.contract.hosts import host_dir, load_hosts, ssh
from tests.tlsfiles import make_pki, reissue_server

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

H1 = "10.77.0.11"


def _config(provider: str, port: int) -> str:
    info = load_hosts()
    h1 = next(h for h in info["hosts"] if h["name"] == "h1")
    base_image = f"\n    base_image: {info['base_image']}" if provider == "docker" else ""
    return textwrap.dedent(f"""
        pools:
          p:
            provider: {provider}
            known_hosts: {info["ssh"]["known_hosts"]}
            price_per_gpu_second: {{cpu: 0.001}}
            hosts: [{{address: {h1["address"]}, identity_file: {info["ssh"]["identity_file"]}, name: h1}}]{{base}}
        gateway:
          main:
            pool: p
            listen: 0.0.0.0:{port}
            advertise_url: https://{H1}:{port}
            api_keys: {{test: test-key}}
            tls: {{cert_file: tls/server.pem, key_file: tls/server-key.pem, ca_file: tls/ca.pem,
                  client_ca_file: tls/client-ca.pem, client_cert_file: tls/client.pem,
                  client_key_file: tls/client-key.pem}}
            timings: {{lease_timeout: 5s, ping_interval: 1s, reconcile_interval: 0.3s, drain_timeout: 3s,
                      take_timeout: 2s, start_backoff: 1s, start_backoff_max: 4s}}
        endpoints:
          echo:
            pool: p
            worker: {{template: echo}}
            scaling: {{min_workers: 0, max_workers: 1, idle_timeout: 30s}}
        """).replace("{base}", base_image)


@pytest.fixture
def workdir(tmp_path: Path):  # type: ignore[no-untyped-def]
    load_hosts()
    directory = tmp_path / "cfg"
    directory.mkdir()
    yield directory
    destroy_after_test(directory, timeout=300)


def _modes(*paths: str) -> list[str]:
    out = ssh(H1, "stat", "-c", "%a", *paths).stdout.split()
    assert len(out) == len(paths), out
    return out


def _baremetal_files(lineage: str, worker_id: str, pki: dict[str, Path]) -> None:
    """The gateway's TLS directory and the workers' files directory: 0700, the keys and worker files 0600."""
    base = host_dir(lineage)
    tls = f"{base}/gateways/main/tls"
    assert _modes(tls, f"{tls}/key.pem", f"{tls}/client-key.pem", f"{base}/workers/files") == ["700", "600", "600",
                                                                                                "700"]
    worker_files = ssh(H1, "sh", "-c", f"stat -c %a {base}/workers/files/*.pem | sort -u").stdout.split()
    assert worker_files == ["600"], worker_files
    assert pki["ca"].read_text().strip() in ssh(H1, "sh", "-c", f"cat {base}/workers/files/*.pem").stdout


def _docker_files(lineage: str, worker_id: str, pki: dict[str, Path]) -> None:
    """The gateway container's bind-mounted TLS directory, and the worker container's directory (mounted at
    /gpuform: its CA bundle, client certificate and key, named by its environment file): 0700, files 0600."""
    base = host_dir(lineage)
    tls = f"{base}/gateways/main/tls"
    assert _modes(tls, f"{tls}/key.pem", f"{tls}/client-key.pem") == ["700", "600", "600"]
    mounts = json.loads(ssh(H1, "docker", "inspect", "-f", "{{json .Mounts}}",
                            f"gpuform-gateway-{lineage[:8]}-main").stdout)
    assert any(f"{base}/gateways/main" == m["Source"] for m in mounts), mounts
    slot = f"{base}/containers/{worker_id}"
    env = dict(line.split("=", 1) for line in ssh(H1, "cat", f"{slot}/env").stdout.splitlines())
    named = {var: env[var].strip("'") for var in ("SSL_CERT_FILE", "GPUFORM_TLS_CLIENT_CERT", "GPUFORM_TLS_CLIENT_KEY")}
    assert all(path.startswith("/gpuform/") for path in named.values()), named
    on_host = {var: f"{slot}/{path.removeprefix('/gpuform/')}" for var, path in named.items()}
    assert _modes(slot, *on_host.values(), f"{slot}/env") == ["700", "600", "600", "600", "600"]
    assert pki["ca"].read_text().strip() in ssh(H1, "cat", on_host["SSL_CERT_FILE"]).stdout
    assert ssh(H1, "cat", on_host["GPUFORM_TLS_CLIENT_CERT"]).stdout == pki["client_cert"].read_text()


def _leftovers(lineage: str) -> list[str]:
    """This deployment's containers (running or kept), processes and files still on h1."""
    containers = ssh(H1, "docker", "ps", "-aq", "--filter", f"label=gpuform.lineage={lineage}").stdout.split()
    processes = ssh(H1, "sh", "-c", f"pgrep -af '[l]ineage-{lineage[:8]}' || true").stdout.splitlines()
    data = ssh(H1, "sh", "-c", f"ls -d {host_dir(lineage)} 2>/dev/null || true").stdout.split()
    return [f"container {c}" for c in containers] + [f"process {p}" for p in processes] + data


@pytest.mark.parametrize("provider", ["baremetal", pytest.param("docker", marks=pytest.mark.docker)])
def test_mtls_gateway_on_a_host(provider: str, workdir: Path) -> None:
    files = make_pki(workdir, names=(H1,))
    port = free_port()
    write_config(workdir, _config(provider, port))
    applied = run_gpuform("-C", str(workdir), "apply", "--auto-approve", timeout=600)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]

    # a job over HTTPS with a client certificate: the worker the gateway starts must verify it and present one
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.load_cert_chain(files["client_cert"], files["client_key"])
    with httpx.Client(base_url=f"https://{H1}:{port}", verify=context, trust_env=False, timeout=120,
                      headers={"Authorization": "Bearer test-key"}) as http:
        answer = http.post("/v2/echo/runsync", json={"input": {"over": "tls"}}).json()
        assert answer["status"] == "COMPLETED" and answer["output"] == {"echo": {"over": "tls"}}, answer
    anonymous = ssl.create_default_context(cafile=str(files["ca"]))
    with httpx.Client(verify=anonymous, trust_env=False) as http, pytest.raises(httpx.TransportError):
        http.get(f"https://{H1}:{port}/healthz", timeout=10)

    lineage = json.loads((workdir / "state" / "gpuform.state.json").read_text())["lineage"]
    check = _docker_files if provider == "docker" else _baremetal_files
    check(lineage, answer["workerId"], files)

    assert run_gpuform("-C", str(workdir), "plan", "-detailed-exitcode", timeout=300).returncode == 0
    reissue_server(files, names=(H1,))
    planned = run_gpuform("-C", str(workdir), "plan", "-detailed-exitcode", timeout=300)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "gateway.main will be updated in-place" in planned.stdout

    destroyed = run_gpuform("-C", str(workdir), "destroy", "--auto-approve", timeout=300)
    assert destroyed.returncode == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
    assert _leftovers(lineage) == []
