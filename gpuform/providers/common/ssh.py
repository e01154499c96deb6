"""SSH for providers (paramiko): verified host keys, keys or agent, pooled connections, timeouts, argv commands.

- Host keys are checked against a known_hosts file; an unknown host is refused unless the pool trusts on
  first use, in which case its key is recorded in that file. A changed key is always refused.
- A target behind jump hosts (``Target.jump``, from ProxyJump) is reached through a ``direct-tcpip`` channel
  of the previous hop's connection; every hop is a full SSH connection whose host key is checked the same way.
- Commands are argv lists, quoted with :func:`shlex.join` for the remote shell; success is the exit status;
  stdout and stderr are captured so failures carry them.
- paramiko and socket errors never escape: they become :class:`~gpuform.errors.SSHError` with the host's
  address, the reason and how to fix it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import paramiko

from gpuform.errors import SSHError

logging.getLogger("paramiko").setLevel(logging.WARNING)
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    address: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    trust_on_first_use: bool = False
    connect_timeout: float = 10.0
    jump: Target | None = None  # the hop this target is reached through (ProxyJump), itself maybe behind one

    @property
    def label(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    @property
    def route(self) -> str:
        """The label and the jump hosts in front of it, e.g. ``root@10.0.0.7:22 via root@bastion:22``."""
        return self.label if self.jump is None else f"{self.label} via {self.jump.route}"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


class _RecordPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use: accept an unknown host and record its key."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a", encoding="utf-8") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


JumpSource = Callable[["Target"], "Connection"]


class Connection:
    """One authenticated SSH connection (reused for many commands and an SFTP session).

    A target with a ``jump`` is reached through the jump host's connection, taken from ``jumps`` (a pool's,
    shared by the hosts behind one bastion) or, without one, opened by and closed with this connection."""

    def __init__(self, target: Target, jumps: JumpSource | None = None) -> None:
        self.target = target
        self.client = paramiko.SSHClient()
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._reconnecting = threading.RLock()
        self.sftp_lock = threading.RLock()  # paramiko's SFTP client is not safe for concurrent requests
        self._jumps = jumps
        self._own_jump: Connection | None = None
        self._connect()

    def _connect(self) -> None:
        t = self.target
        known = Path(os.path.expanduser(t.known_hosts))
        try:
            if known.exists():
                self.client.load_host_keys(str(known))
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"cannot read known_hosts file {known}: {exc}", "Fix or remove the file.", t.label) from exc
        policy = _RecordPolicy(known) if t.trust_on_first_use else paramiko.RejectPolicy()
        self.client.set_missing_host_key_policy(policy)
        sock = self._through_jump() if t.jump is not None else None
        try:
            self._handshake(known, sock)
        except BaseException:
            if sock is not None:
                sock.close()
            raise

    def _handshake(self, known: Path, sock: paramiko.Channel | None) -> None:
        t = self.target
        key = os.path.expanduser(t.identity_file) if t.identity_file else None
        try:
            self.client.connect(t.address, port=t.port, username=t.user, key_filename=key,
                                allow_agent=key is None, look_for_keys=key is None, timeout=t.connect_timeout,
                                banner_timeout=t.connect_timeout, auth_timeout=t.connect_timeout, sock=sock)
        except paramiko.BadHostKeyException as exc:
            raise SSHError(f"host key of {t.route} does not match {known} (possible man-in-the-middle)",
                           f"If the host was reinstalled, remove its line: ssh-keygen -f {known} -R {t.address}",
                           t.label) from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise SSHError(f"{t.route} is not in {known}; refusing an unknown host key",
                               f"Add it ({_keyscan(t)} >> {known}, after checking the key with the host's "
                               "owner) or set trust_on_first_use: true on the pool.", t.label) from exc
            raise SSHError(f"SSH to {t.route} failed: {exc}", _auth_hint(t), t.label) from exc
        except (OSError, EOFError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise SSHError(f"cannot reach {t.route}: {reason}",
                           "Check the address and port, that the host is up and that sshd listens.", t.label,
                           unreachable=True) from exc

    def _through_jump(self) -> paramiko.Channel:
        """A ``direct-tcpip`` channel from the jump host to the target's sshd (the jump host's key is checked
        when its own connection is made; a failure there names both hosts)."""
        t = self.target
        assert t.jump is not None
        try:
            jump = self._jump_connection(t.jump)
        except SSHError as exc:
            raise SSHError(f"jump host for {t.label}: {exc.message}", exc.hint, t.label,
                           unreachable=exc.unreachable) from exc
        try:
            return jump._transport().open_channel("direct-tcpip", (t.address, t.port), ("127.0.0.1", 0),
                                                  timeout=t.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            raise SSHError(f"cannot reach {t.route}: the jump host could not connect to {t.address}:{t.port} "
                           f"({reason})", f"Check that {t.jump.address} can reach {t.address}:{t.port} and "
                           "that its sshd allows TCP forwarding (AllowTcpForwarding).", t.label,
                           unreachable=True) from exc

    def _jump_connection(self, jump: Target) -> Connection:
        if self._jumps is not None:
            return self._jumps(jump)
        if self._own_jump is None or not self._own_jump.alive:
            if self._own_jump is not None:
                self._own_jump.close()
            self._own_jump = Connection(jump)
        return self._own_jump

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 300.0, check: bool = True,
            env: dict[str, str] | None = None) -> Result:
        """Run ``argv`` on the host. With ``check``, a non-zero exit raises SSHError carrying the output."""
        command = shlex.join(argv)
        if env:
            command = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *argv])
        try:
            chan = self._open_session()
            chan.settimeout(timeout)
            if stdin is None:
                chan.exec_command(no_stdin(command))
            else:
                chan.exec_command(command)
                chan.sendall(stdin)
                chan.shutdown_write()  # it reads its input up to this EOF, so it has not closed the channel yet
            out, err = _drain(chan, timeout)
            code = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError, TimeoutError) as exc:
            raise SSHError(f"running {argv[0]} on {self.target.label} failed: {exc or type(exc).__name__}",
                           "Check the connection; the command may have timed out.", self.target.label) from exc
        result = Result(code, out, err)
        if check and code != 0:
            tail = (err or out).decode(errors="replace").strip()[-1500:]
            raise SSHError(f"{shlex.join(argv)[:200]} exited {code} on {self.target.label}: {tail}",
                           "See the command's output above.", self.target.label)
        return result

    def exec_channel(self, command: str) -> paramiko.Channel:
        """An open channel running ``command`` (for byte streams such as ``docker system dial-stdio``)."""
        chan = self._open_session()
        chan.exec_command(command)
        return chan

    def _open_session(self) -> paramiko.Channel:
        """A new session channel (see :meth:`_on_live_transport`)."""
        return self._on_live_transport(lambda t: t.open_session(timeout=self.target.connect_timeout))

    def _on_live_transport(self, open_: Callable[[paramiko.Transport], T]) -> T:
        """``open_`` (a channel or an SFTP session) on the live transport. A connection that drops while it
        opens (nothing ran on it yet) is made again once: the host's sshd restarting, or a connection an idle
        NAT forgot, costs one reconnect."""
        transport = self._transport()
        try:
            return open_(transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if transport.is_active():
                if not _timed_out(exc):
                    raise
                # the host stopped answering on a connection that looks open (its link cut, or it froze):
                # drop that connection, so the next call connects again and fails fast, and say it is unreachable
                transport.close()
                raise SSHError(f"cannot reach {self.target.route}: no answer on the open SSH connection "
                               f"within {self.target.connect_timeout:g}s ({exc})",
                               "Check that the host is up and reachable.", self.target.label,
                               unreachable=True) from exc
            log.info("SSH connection to %s dropped (%s); connecting again", self.target.label, exc or type(exc))
            return open_(self._transport())

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            self._transport()  # a dropped connection is made again (and its SFTP session with it)
            if self._sftp is None:
                try:
                    self._sftp = self._on_live_transport(_sftp_client)
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    raise SSHError(f"SFTP to {self.target.label} failed: {exc}", "Check that the host runs an "
                                   "sftp subsystem.", self.target.label) from exc
            return self._sftp

    def put(self, local: Path | IO[bytes], remote: str, callback: Callable[[int, int], None] | None = None) -> None:
        try:
            with self.sftp_lock:
                if isinstance(local, Path):
                    self.sftp().put(str(local), remote, callback=callback)
                else:
                    self.sftp().putfo(local, remote, callback=callback)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"copying to {self.target.label}:{remote} failed: {exc}",
                           "Check free disk space and permissions on the host.", self.target.label) from exc

    def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        tmp = f"{remote}.gpuform-tmp-{uuid.uuid4().hex[:12]}"  # writers of one file (the CLI, a gateway) never share it
        try:
            with self.sftp_lock:
                with self.sftp().open(tmp, "wb") as fh:
                    fh.write(data)
                self.sftp().chmod(tmp, mode)
                self.sftp().posix_rename(tmp, remote)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"writing {self.target.label}:{remote} failed: {exc}",
                           "Check permissions on the host.", self.target.label) from exc

    def rename(self, src: str, dst: str) -> None:
        try:
            with self.sftp_lock:
                self.sftp().posix_rename(src, dst)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"renaming {src} on {self.target.label} failed: {exc}", "Check permissions on the host.",
                           self.target.label) from exc

    def _transport(self) -> paramiko.Transport:
        """The live transport, connecting again if it dropped (one thread reconnects; the others wait for it)."""
        with self._reconnecting:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                self.client.close()
                self.client = paramiko.SSHClient()
                self._sftp = None
                self._connect()
                transport = self.client.get_transport()
            assert transport is not None
            return transport

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._sftp is not None:
                self._sftp.close()
        self.client.close()
        if self._own_jump is not None:
            self._own_jump.close()


def no_stdin(command: str) -> str:
    """``command`` reading /dev/null, so no EOF has to be sent on its channel. paramiko sends an EOF after
    releasing the channel's lock: when the command has just exited, the reply to the host's CLOSE can go out
    first, and sshd then drops the whole connection ("ieof packet referred to nonexistent channel",
    paramiko#1705), with every other command and SFTP transfer on it."""
    return f"{command} </dev/null"


def _timed_out(exc: BaseException) -> bool:
    """Whether opening a channel ran out of time (paramiko says so only in its message)."""
    return isinstance(exc, TimeoutError) or (isinstance(exc, paramiko.SSHException) and "Timeout" in str(exc))


def _sftp_client(transport: paramiko.Transport) -> paramiko.SFTPClient:
    """An SFTP session on ``transport`` (what ``SSHClient.open_sftp`` opens)."""
    client = paramiko.SFTPClient.from_transport(transport)
    if client is None:
        raise paramiko.SSHException("the sftp subsystem did not start")
    return client


def _drain(chan: paramiko.Channel, timeout: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr until the command exits (raises TimeoutError after ``timeout``)."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while not chan.exit_status_ready():
        busy = False
        while chan.recv_ready():
            out += chan.recv(65536)
            busy = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            busy = True
        if time.monotonic() > deadline:
            chan.close()
            raise TimeoutError(f"no exit after {timeout:g}s")
        if not busy:
            time.sleep(0.002)
    while data := chan.recv(65536):
        out += data
    while chan.recv_stderr_ready():
        err += chan.recv_stderr(65536)
    return bytes(out), bytes(err)


def _keyscan(t: Target) -> str:
    """The command that reads ``t``'s host key from where it is reachable (through its jump host, if any)."""
    scan = f"ssh-keyscan -p {t.port} {t.address}"
    if t.jump is None:
        return scan
    return f"ssh -p {t.jump.port} {t.jump.user}@{t.jump.address} {scan}"


def _auth_hint(t: Target) -> str:
    if t.identity_file:
        return f"Check that {t.identity_file} is the key authorized for {t.user} on the host."
    return "Load a key into your SSH agent (ssh-add) or set identity_file on the host."


class ConnectionPool:
    """Connections by target, created on first use and reused; thread-safe."""

    def __init__(self) -> None:
        self._conns: dict[Target, Connection] = {}
        self._locks: dict[Target, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, target: Target) -> Connection:
        with self._lock:
            lock = self._locks.setdefault(target, threading.Lock())
        with lock:
            conn = self._conns.get(target)
            if conn is None or not conn.alive:
                conn = Connection(target, self.get)
                self._conns[target] = conn
            return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()

    @contextlib.contextmanager
    def borrowed(self, target: Target) -> Iterator[Connection]:
        yield self.get(target)
