"""examples/ha as a user runs it, on the test hosts: gateway replica r0 on h1 and r1 on h2 (a baremetal pool),
one PostgreSQL store, and the example's HAProxy in front on this machine. Both replicas serve as this
deployment, the load balancer answers while either replica is gone, and destroy stops both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests import haproxy
from tests.conftest import REPO, destroy_after_test, free_port, run_gpuform
from tests.contract.hosts import load_hosts, ssh
from tests.helpers import wait_for
from tests.pg import drop_schema, fresh_schema, postgres_url

pytestmark = [pytest.mark.slow, pytest.mark.ssh, pytest.mark.postgres]
KEY = "ha-example-key"


class Forward:
    """The test PostgreSQL listens on 127.0.0.1 only: a TCP forwarder on the hosts' bridge lets h1 and h2 reach it."""

    def __init__(self, listen_host: str, target: tuple[str, int]) -> None:
        self.target, self.loop = target, asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._pipe, listen_host, 0))
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    def close(self) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    """(URL the hosts use, schema) for the example's store; the schema is dropped afterwards."""
    url, schema = postgres_url(), fresh_schema()
    parts = urlsplit(url)
    forward = Forward(load_hosts()["gateway"], (parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@{load_hosts()['gateway']}:{forward.port}"
    yield urlunsplit(parts._replace(netloc=netloc)), schema
    forward.close()
    drop_schema(schema)


def test_the_ha_example_runs_two_replicas_on_h1_and_h2_behind_haproxy(tmp_path: Path,
                                                                      database: tuple[str, str]) -> None:
    info, (db_url, schema) = load_hosts(), database
    directory = tmp_path / "ha"
    shutil.copytree(REPO / "examples" / "ha", directory)
    config = directory / "gpuform.yaml"
    config.write_text(config.read_text().replace('url: "${env.GATEWAY_DB_URL}"}',
                                                 f'url: "${{env.GATEWAY_DB_URL}}", schema_name: {schema}}}'))
    port, lb_port, stats = free_port(), free_port(), free_port()
    lb = info["gateway"]
    variables = ["host1=10.77.0.11", "host2=10.77.0.12", f"ssh_key={info['ssh']['identity_file']}",
                 f"known_hosts={info['ssh']['known_hosts']}", f"port={port}", f"lb={lb}", f"lb_port={lb_port}"]
    args = [a for v in variables for a in ("--var", v)]
    env = {"GPUFORM_API_KEY": KEY, "GATEWAY_DB_URL": db_url}
    balancer = subprocess.Popen(["haproxy", "-db", "-f", str(directory / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env={**os.environ, "GPUFORM_LB_BIND": f"{lb}:{lb_port}",
                                     "GPUFORM_LB_STATS": f"127.0.0.1:{stats}",
                                     "GPUFORM_R0": f"10.77.0.11:{port}", "GPUFORM_R1": f"10.77.0.12:{port}"})
    rows: list[dict[str, str]] = []
    try:
        applied = run_gpuform("-C", str(directory), *args, "apply", "--auto-approve", env=env, timeout=900)
        assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
        state = json.loads((directory / "state" / "gpuform.state.json").read_text())
        (gateway,) = [r for r in state["resources"] if r["address"] == "gateway.main"]
        rows = list(gateway["computed"]["replica_set"])
        assert [(r["id"], r["host"], r["url"]) for r in rows] == [
            ("r0", "gpu1", f"http://10.77.0.11:{port}"), ("r1", "gpu2", f"http://10.77.0.12:{port}")]
        for row in rows:
            assert httpx.get(f"{row['url']}/healthz", trust_env=False).status_code == 200, row
        with httpx.Client(base_url=f"http://{lb}:{lb_port}", headers={"Authorization": f"Bearer {KEY}"},
                          trust_env=False, timeout=10) as http:
            wait_for(lambda: haproxy.up(f"http://127.0.0.1:{stats}/stats;csv") == {"r0", "r1"}, 20,
                     what="haproxy to see both replicas healthy")
            assert all(http.get("/v2/echo/health").status_code == 200 for _ in range(10))
            planned = run_gpuform("-C", str(directory), *args, "plan", "-detailed-exitcode", env=env)
            assert planned.returncode == 0, planned.stdout[-3000:]
            mine = f"lineage-{state['lineage'][:8]}/gateways/main[.]r1/"  # replica r1 of this deployment only
            ssh("10.77.0.12", "sh", "-c", f"pkill -9 -f '[s]upervise --pidfile .*{mine}' ; "
                                          f"pkill -9 -f '[g]puform[.]gateway --config .*{mine}' ; true")
            time.sleep(0.2)  # a keep-alive connection whose last request went to r1 may close: in flight at the kill
            assert all(http.get("/v2/echo/health").status_code == 200 for _ in range(40)), "r0 serves alone"
            planned = run_gpuform("-C", str(directory), *args, "plan", env=env)
            assert "repair: replica r1" in planned.stdout, planned.stdout[-3000:] + planned.stderr[-3000:]
    finally:
        balancer.terminate()
        balancer.wait(10)
        destroy_after_test(directory, *args, env=env)
    for row in rows:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{row['url']}/healthz", trust_env=False, timeout=2)
