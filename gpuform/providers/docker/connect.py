"""Docker engines of a pool: the local socket, or ``docker system dial-stdio`` over a verified SSH connection.

For SSH hosts the docker SDK talks to a loopback port; each connection to it is relayed over a paramiko
channel running ``docker system dial-stdio`` on the host. Host keys are therefore checked against the
pool's known_hosts (the SDK's own ``ssh://`` support reads only ``~/.ssh/known_hosts``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass

import docker
import docker.errors
import paramiko

from gpuform.errors import DockerError, SSHError
from gpuform.providers.common.shell import LocalShell, Shell
from gpuform.providers.common.ssh import Connection

log = logging.getLogger("gpuform.docker")


class DialRelay:
    """A loopback listener whose connections are relayed to the host's dockerd over SSH."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, name=f"docker-relay-{conn.target.address}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                chan = self.conn.exec_channel("docker system dial-stdio")
            except (SSHError, paramiko.SSHException, OSError) as exc:
                log.warning("docker relay to %s failed: %s", self.conn.target.label, exc)
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, chan), daemon=True).start()
            threading.Thread(target=self._pump_back, args=(chan, client), daemon=True).start()

    @staticmethod
    def _pump(client: socket.socket, chan: paramiko.Channel) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            while data := client.recv(65536):
                chan.sendall(data)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            chan.shutdown_write()

    @staticmethod
    def _pump_back(chan: paramiko.Channel, client: socket.socket) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            while data := chan.recv(65536):
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            client.close()
        chan.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.server.close()


@dataclass
class Engine:
    """One pool host: its docker client and its shell."""

    name: str
    client: docker.DockerClient
    shell: Shell
    relay: DialRelay | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.relay is not None:
            self.relay.close()


def connect_local(name: str, base_url: str, timeout: float) -> Engine:
    try:
        client = docker.DockerClient(base_url=base_url, version="auto", timeout=int(max(timeout, 60)))
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot reach the docker engine at {base_url}: {exc}",
                          "Check that dockerd runs and that this user may use its socket.", name) from exc
    return Engine(name, client, LocalShell())


def connect_ssh(name: str, conn: Connection, timeout: float) -> Engine:
    check = conn.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False)
    if check.code != 0:
        raise DockerError(f"dockerd on {conn.target.label} does not answer: "
                          f"{(check.stderr or check.stdout).decode(errors='replace').strip()[-300:]}",
                          "Start dockerd on the host and make sure the SSH user may use it.", name)
    relay = DialRelay(conn)
    try:
        client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{relay.port}", version="auto",
                                     timeout=int(max(timeout, 60)))
    except docker.errors.DockerException as exc:
        relay.close()
        raise DockerError(f"cannot talk to dockerd on {conn.target.label}: {exc}",
                          "Check `docker system dial-stdio` works for the SSH user.", name) from exc
    return Engine(name, client, conn, relay)
