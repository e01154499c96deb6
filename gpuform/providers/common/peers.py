"""Host-to-host copy for volume staging: a key gpuform makes for one staging, and removes after.

Every host gets, in a private temporary directory (``mktemp -d /tmp/gpuform-volume-…``), the private key, a
known_hosts file with the other hosts' host keys as this machine verified them (so each hop still checks host
keys), and a small receive script. Every host's ``~/.ssh/authorized_keys`` gets the public key, restricted as
far as sshd allows:

    restrict,from="<the other hosts>",expiry-time="<in 2 days>",command="sh <dir>/receive <volume path>"
    ssh-ed25519 … gpuform-volume-<id>      (one line)

so the key can only write ``<volume path>/<relpath>.gpuform-partial`` (no shell, no forwarding, no pty), only
from the pool's hosts, and stops working by itself if a killed apply could not remove it. Staging checks
every received file's checksum over this machine's own SSH connection before moving it into place.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import posixpath
import secrets
import shlex
from collections.abc import Mapping
from types import TracebackType

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gpuform.errors import GpuformError, SSHError
from gpuform.providers.common.ssh import Connection, no_stdin

RECEIVE = """#!/bin/sh
# gpuform: receive one volume file from another host of the pool (the only thing this key may do)
set -eu
rel=${SSH_ORIGINAL_COMMAND:-}
case $rel in ''|/*|..|../*|*/..|*/../*) echo "gpuform receive: refused path" >&2; exit 2 ;; esac
dest=$1/$rel.gpuform-partial
mkdir -p -- "$(dirname -- "$dest")"
exec cat >"$dest"
"""

KEYS = r"""set -eu
umask 077
mkdir -p "$HOME/.ssh"
f=$HOME/.ssh/authorized_keys
exec 9>>"$HOME/.ssh/.gpuform-keys.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if [ -f "$f" ]; then
  grep -vF -e "$2" "$f" >"$f.gpuform-tmp" || true
  cat "$f.gpuform-tmp" >"$f"
  rm -f "$f.gpuform-tmp"
fi
if [ "$1" = add ]; then
  if [ -s "$f" ] && [ -n "$(tail -c1 "$f")" ]; then echo >>"$f"; fi
  printf '%s\n' "$3" >>"$f"
fi
"""

SEND = 'f=$1; shift; exec "$@" <"$f"'
# AES-GCM first: with AES-NI it encrypts several times faster than OpenSSH's default ChaCha20 (weights are big)
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"


def new_key() -> tuple[bytes, str]:
    """A fresh ed25519 key: (private key in OpenSSH format, public key line without comment)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def known_host_name(conn: Connection) -> str:
    t = conn.target
    return t.address if t.port == 22 else f"[{t.address}]:{t.port}"


def host_key_line(conn: Connection) -> str:
    """The host key this machine verified when it connected to ``conn``, as a known_hosts line."""
    transport = conn.client.get_transport()
    if transport is None:
        raise GpuformError(f"no SSH session to {conn.target.label}", "Run apply again.")
    key = transport.get_remote_server_key()
    return f"{known_host_name(conn)} {key.get_name()} {key.get_base64()}"


def authorized_line(public: str, marker: str, script: str, path: str, senders: list[str]) -> str:
    """The restricted authorized_keys line of the staging key on one receiving host."""
    expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).strftime("%Y%m%d%H%M")
    command = shlex.join(["sh", script, path]).replace("\\", "\\\\").replace('"', '\\"')
    options = ["restrict"]
    if senders and all(_is_ip(s) for s in senders):
        options.append(f'from="{",".join(senders)}"')
    options += [f'expiry-time="{expiry}"', f'command="{command}"']
    return f"{','.join(options)} {public} {marker}"


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def run_quietly(conn: Connection, argv: list[str], timeout: float = 24 * 3600.0) -> None:
    """Run a long command that prints little: wait for its exit without polling (a copy of a large file runs
    for minutes; several at once must not keep this machine's CPUs busy). SSHError when it fails."""
    try:
        chan = conn.exec_channel(no_stdin(shlex.join(argv)))
        done = chan.status_event.wait(timeout)
        code = chan.recv_exit_status() if done else -1
        err = b""
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        chan.close()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SSHError(f"running {argv[0]} on {conn.target.label} failed: {exc}", "Check the connection.",
                       conn.target.label) from exc
    if code != 0:
        why = err.decode(errors="replace").strip()[-1000:] if done else f"no exit after {timeout:g}s"
        raise SSHError(f"host-to-host copy from {conn.target.label} exited {code}: {why}",
                       "Check that the hosts reach each other over SSH at their pool addresses.", conn.target.label)


class PeerLink:
    """The staging key installed on ``hosts`` (a context manager); :meth:`send` copies one file between two."""

    def __init__(self, hosts: Mapping[str, Connection], path: str, owner: str) -> None:
        """``owner`` names the volume (lineage and path): installing removes what an earlier staging of the
        same volume, killed before it could clean up, left behind."""
        self.hosts, self.path = dict(hosts), path
        self.owner = f"gpuform-volume-{hashlib.sha256(owner.encode()).hexdigest()[:12]}"
        self.marker = f"{self.owner}-{secrets.token_hex(6)}"
        self.dirs: dict[str, str] = {}

    def __enter__(self) -> PeerLink:
        return self.open()

    def open(self) -> PeerLink:
        """Install the key on every host; on failure, what was installed is removed and the error raised."""
        private, public = new_key()
        known = "".join(host_key_line(c) + "\n" for c in self.hosts.values()).encode()
        try:
            for name, conn in self.hosts.items():
                self._install(name, conn, private, public, known)
        except BaseException:
            self.close()
            raise
        return self

    def _install(self, name: str, conn: Connection, private: bytes, public: str, known: bytes) -> None:
        conn.run(["find", "/tmp", "-maxdepth", "1", "-name", f"{self.owner}.*", "-exec", "rm", "-rf", "--", "{}", "+"],
                 check=False)
        directory = conn.run(["mktemp", "-d", f"/tmp/{self.owner}.XXXXXXXX"]).text.strip()
        self.dirs[name] = directory
        conn.write_file(posixpath.join(directory, "key"), private, mode=0o600)
        conn.write_file(posixpath.join(directory, "known_hosts"), known, mode=0o600)
        conn.write_file(posixpath.join(directory, "receive"), RECEIVE.encode(), mode=0o700)
        senders = [c.target.address for n, c in self.hosts.items() if n != name]
        line = authorized_line(public, self.marker, posixpath.join(directory, "receive"), self.path, senders)
        conn.run(["sh", "-c", KEYS, "gpuform-keys", "add", self.owner + "-", line])

    def send(self, server: str, receiver: str, rel: str) -> None:
        """Copy ``path/rel`` from ``server`` to ``receiver``'s ``path/rel.gpuform-partial``, over SSH from the
        server, with the staging key; raises SSHError or ProviderError when that fails."""
        directory, dest = self.dirs[server], self.hosts[receiver].target
        argv = ["ssh", "-F", "/dev/null", "-i", posixpath.join(directory, "key"), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={posixpath.join(directory, 'known_hosts')}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-o", f"Ciphers={CIPHERS}",
                "-p", str(dest.port), f"{dest.user}@{dest.address}", rel]
        run_quietly(self.hosts[server], ["sh", "-c", SEND, "gpuform-send", posixpath.join(self.path, rel), *argv])

    def close(self) -> list[str]:
        """Remove the key from every host (authorized_keys line, temporary directory); the hosts it could not
        be removed from, with the reason (the key expires by itself)."""
        failed: list[str] = []
        for name, conn in self.hosts.items():
            try:
                conn.run(["sh", "-c", KEYS, "gpuform-keys", "remove", self.marker])
                if name in self.dirs:
                    conn.run(["rm", "-rf", "--", self.dirs[name]])
            except GpuformError as exc:
                failed.append(f"{name}: {exc}")
        return failed

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
