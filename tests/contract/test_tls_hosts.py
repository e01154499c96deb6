"""TLS with mTLS on a bare-metal host over SSH (h1): apply copies the certificates and keys to the gateway's
host (keys mode 0600), the gateway serves HTTPS and asks for client certificates, the workers it starts on
the host verify it with the CA and present gpuform's client certificate, and a renewed certificate is a
planned update."""

from __future__ import annotations

import json
import ssl
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.conftest import destroy_after_test, free_port, run_gpuform, write_config
from tests.contract.hosts import load_hosts, ssh
from tests.tlsfiles import make_pki, reissue_server

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

H1 = "10.77.0.11"


def _config(port: int) -> str:
    info = load_hosts()
    h1 = next(h for h in info["hosts"] if h["name"] == "h1")
    return textwrap.dedent(f"""
        pools:
          p:
            provider: baremetal
            known_hosts: {info["ssh"]["known_hosts"]}
            price_per_gpu_second: {{cpu: 0.001}}
            hosts: [{{address: {h1["address"]}, identity_file: {info["ssh"]["identity_file"]}, name: h1}}]
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
        """)


@pytest.fixture
def workdir(tmp_path: Path):  # type: ignore[no-untyped-def]
    load_hosts()
    directory = tmp_path / "cfg"
    directory.mkdir()
    yield directory
    destroy_after_test(directory, timeout=300)


def test_mtls_gateway_on_a_baremetal_host(workdir: Path) -> None:
    files = make_pki(workdir, names=(H1,))
    port = free_port()
    write_config(workdir, _config(port))
    applied = run_gpuform("-C", str(workdir), "apply", "--auto-approve", timeout=600)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]

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
    base = f"/var/lib/gpuform/lineage-{lineage[:8]}"
    modes = ssh(H1, "stat", "-c", "%a %n", f"{base}/gateways/main/tls", f"{base}/gateways/main/tls/key.pem",
                f"{base}/gateways/main/tls/client-key.pem", f"{base}/workers/files").stdout.split("\n")
    assert [m.split()[0] for m in modes if m] == ["700", "600", "600", "700"], modes
    worker_files = ssh(H1, "sh", "-c", f"stat -c %a {base}/workers/files/*.pem | sort -u").stdout.split()
    assert worker_files == ["600"], worker_files

    assert run_gpuform("-C", str(workdir), "plan", "-detailed-exitcode", timeout=300).returncode == 0
    reissue_server(files, names=(H1,))
    planned = run_gpuform("-C", str(workdir), "plan", "-detailed-exitcode", timeout=300)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "gateway.main will be updated in-place" in planned.stdout
