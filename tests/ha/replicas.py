"""Two real gateway replica processes on the HA tier's PostgreSQL, on the local pool with real echo workers:
the applied one (its supervisor restarts it unless stopped) and a second one started from the same
configuration on another port. Workers reach them through a TCP proxy that connects each connection to the
first replica that accepts it (what a load balancer in front of the replicas does), so a worker of a killed
replica goes on with the other one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port, local_config, pool_dir
from tests.ha.conftest import HaPostgres
from tests.helpers import Deployment, wait_for

ENDPOINT = """
    endpoints:
      echo:
        pool: here
        worker: {template: echo, concurrency: 8}
        scaling: {min_workers: 2, max_workers: 2, idle_timeout: 60s}
    """


class Proxy:
    """A TCP proxy on 127.0.0.1 (a thread with its own event loop): each connection goes to the first of
    ``upstreams`` (ports) that accepts it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.upstreams: list[int] = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        started.set()
        self.loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.upstreams:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()

    def close(self) -> None:
        async def stop() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self.loop)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@dataclass
class Replicas:
    deployment: Deployment
    second_port: int
    second: subprocess.Popen[bytes]
    schema: str
    proxy: Proxy

    @property
    def gdir(self) -> Path:
        return pool_dir(self.deployment.workdir) / "gateways/main"

    @property
    def urls(self) -> list[str]:
        return [self.deployment.url, f"http://127.0.0.1:{self.second_port}"]

    @property
    def admin_key(self) -> str:
        return (self.deployment.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()

    def replica(self, index: int) -> dict[str, Any] | None:
        """The ``replica`` part of replica ``index``'s /admin/status (None while it does not answer)."""
        try:
            resp = httpx.get(f"{self.urls[index]}/admin/status", timeout=2, trust_env=False,
                             headers={"Authorization": f"Bearer {self.admin_key}"})
        except httpx.HTTPError:
            return None
        found: dict[str, Any] | None = resp.json().get("replica") if resp.status_code == 200 else None
        return found

    def supervisor(self) -> dict[str, int]:
        pids: dict[str, int] = json.loads((self.gdir / "supervisor.pid").read_text())
        return pids


def _apply(d: Deployment, pg: HaPostgres, schema: str, proxy: Proxy) -> None:
    store = f'    store: {{type: postgres, url: "${{env.GATEWAY_DB_URL}}", schema_name: {schema}}}\n' \
            f'    advertise_url: http://127.0.0.1:{proxy.port}\n'
    text = local_config(d.port, "", ENDPOINT).replace("    api_keys: {test: test-key}\n",
                                                      "    api_keys: {test: test-key}\n" + store)
    d.apply_text(text, env={"GATEWAY_DB_URL": pg.url("127.0.0.1")})


def _start_second(gdir: Path, port: int) -> subprocess.Popen[bytes]:
    config = json.loads((gdir / "config.json").read_text())
    config["gateway"]["listen"] = f"127.0.0.1:{port}"
    path = gdir / "config.r1.json"
    path.write_text(json.dumps(config))
    os.chmod(path, 0o600)
    with open(gdir / "r1.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "gpuform.gateway", "--config", str(path),
                                 "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)


@contextmanager
def two_replicas(deployment: Deployment, pg: HaPostgres, proxy: Proxy) -> Iterator[Replicas]:
    """The applied gateway leading with its two echo workers ready, and a second replica following; ``proxy``
    (closed after the deployment is destroyed) in front of them."""
    schema = "ha_" + uuid.uuid4().hex[:10]
    port = free_port()
    proxy.upstreams[:] = [deployment.port, port]
    _apply(deployment, pg, schema, proxy)
    wait_for(lambda: len(deployment.workers("echo", ("idle", "running"))) == 2, 60, interval=0.3,
             what="the leader's two workers to be ready")
    replicas = Replicas(deployment, port, _start_second(pool_dir(deployment.workdir) / "gateways/main", port),
                        schema, proxy)
    try:
        wait_for(lambda: replicas.replica(1), 30, interval=0.2, what="the second replica to answer")
        yield replicas
    finally:
        replicas.second.terminate()
        try:
            replicas.second.wait(30)
        except subprocess.TimeoutExpired:
            replicas.second.kill()


def resume_supervisor(replicas: Replicas) -> None:
    """Let the applied replica's supervisor run (and restart it) again, and wait until it answers."""
    os.kill(replicas.supervisor()["pid"], signal.SIGCONT)
    wait_for(lambda: replicas.replica(0), 60, interval=0.2, what="the restarted first replica to answer")
