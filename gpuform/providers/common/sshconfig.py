"""A pool's hosts as OpenSSH would reach them: ``HostName``, ``Port``, ``User``, ``IdentityFile`` and
``ProxyJump`` from an ssh_config file, resolved into :class:`~gpuform.providers.common.ssh.Target` chains.

Which file: the pool's ``ssh_config`` (relative to the configuration directory; ``none`` reads none), else
``~/.ssh/config`` when it exists. Precedence, per setting: a host's ``port``, ``user`` or ``identity_file``
written in the pool (other than the defaults 22, root, none) wins; else the ssh_config's value; else the
default. ProxyJump hops are looked up in the same file (the first hop with its own ProxyJump too, as
OpenSSH does); ``Include`` is read; ``Match exec`` blocks are left out and ``ProxyCommand`` is refused
(gpuform runs no shell strings). Host keys of every hop are
checked against the pool's known_hosts; the file's ``StrictHostKeyChecking`` and ``UserKnownHostsFile``
never relax that.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import paramiko

from gpuform.config.schema import SSHHost
from gpuform.errors import SSHError
from gpuform.providers.common.ssh import Target

DEFAULT_FILE = "~/.ssh/config"
MAX_HOPS = 8
MAX_INCLUDE_DEPTH = 16


class SSHConfigError(ValueError):
    """The ssh_config cannot be used for a host (unreadable, ProxyCommand, a bad or looping ProxyJump)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class Defaults:
    """What a hop gets when neither the pool nor the ssh_config says: the pool's host-key settings too."""

    known_hosts: str
    trust_on_first_use: bool
    connect_timeout: float


def config_path(declared: str | None, config_dir: Path) -> Path | None:
    """The ssh_config file a pool reads: declared (``none``: no file), else ``~/.ssh/config`` if it exists."""
    if declared is not None:
        if declared == "none":
            return None
        return config_dir / os.path.expanduser(declared)
    default = Path(os.path.expanduser(DEFAULT_FILE))
    return default if default.is_file() else None


def load(path: Path | None) -> paramiko.SSHConfig:
    """The parsed file (an empty configuration for None); raises SSHConfigError when it cannot be read."""
    if path is None:
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_text(_text(path, 0))
    except FileNotFoundError as exc:
        raise SSHConfigError(f"ssh_config file {path} does not exist",
                             "Fix the path (relative paths are read from the configuration directory) or remove "
                             "`ssh_config:` to use ~/.ssh/config.") from exc
    except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
        raise SSHConfigError(f"cannot read ssh_config file {path}: {exc}", "Fix the file.") from exc


def _text(path: Path, depth: int) -> str:
    """The file with its ``Include`` lines replaced by the files they name (relative to ~/.ssh, as OpenSSH
    reads a user's configuration), and its ``Match exec`` blocks left out: they would run a shell command."""
    out: list[str] = []
    skipping = False
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        keyword = words[0].lower() if words else ""
        if keyword in ("host", "match"):
            skipping = keyword == "match" and "exec" in (w.lower() for w in words[1:])
        if skipping:
            continue
        if keyword != "include":
            out.append(line)
            continue
        if depth >= MAX_INCLUDE_DEPTH:
            raise SSHConfigError(f"{path}: Include nests deeper than {MAX_INCLUDE_DEPTH}", "Break the Include loop.")
        for pattern in words[1:]:
            full = os.path.join(os.path.expanduser("~/.ssh"), os.path.expanduser(pattern))
            out += [_text(Path(found), depth + 1) for found in sorted(glob.glob(full))]
    return "\n".join(out) + "\n"


def resolve(host: SSHHost, cfg: paramiko.SSHConfig, defaults: Defaults) -> Target:
    """The target for a pool host: the pool's explicit settings over the ssh_config's, with its jump chain."""
    base = _hop(host.address, cfg, defaults, port=host.port if host.port != 22 else None,
                user=host.user if host.user != "root" else None, chain=())
    return replace(base, identity_file=host.identity_file) if host.identity_file else base


def _hop(alias: str, cfg: paramiko.SSHConfig, defaults: Defaults, port: int | None, user: str | None,
         chain: tuple[str, ...]) -> Target:
    if alias in chain or len(chain) >= MAX_HOPS:
        raise SSHConfigError(f"ProxyJump loops or is too long: {' -> '.join((*chain, alias))}",
                             f"Break the loop (at most {MAX_HOPS} hops) in the ssh_config.")
    found = _lookup(cfg, alias)
    if found.get("proxycommand") and not found.get("proxyjump"):
        raise SSHConfigError(f"the ssh_config gives {alias} a ProxyCommand, which gpuform does not run",
                             "Use ProxyJump (user@bastion:port) instead, or ProxyCommand none for this host.")
    hops = _jumps(str(found.get("proxyjump", "none")), alias)
    if not hops:
        return _target(found, alias, port, user, defaults, None)
    first, first_port, first_user = hops[0]
    jump = _hop(first, cfg, defaults, first_port, first_user, (*chain, alias))
    for hop_alias, hop_port, hop_user in hops[1:]:  # later hops: their own ProxyJump is not followed
        jump = _target(_lookup(cfg, hop_alias), hop_alias, hop_port, hop_user, defaults, jump)
    return _target(found, alias, port, user, defaults, jump)


def _target(found: paramiko.SSHConfigDict, alias: str, port: int | None, user: str | None, defaults: Defaults,
            jump: Target | None) -> Target:
    """One hop: ``port`` and ``user`` (given explicitly) over the file's, the file's over the defaults."""
    return Target(str(found.get("hostname", alias)), port or _port(found, alias), user or found.get("user", "root"),
                  _identity(found), defaults.known_hosts, defaults.trust_on_first_use, defaults.connect_timeout,
                  jump=jump)


def _lookup(cfg: paramiko.SSHConfig, alias: str) -> paramiko.SSHConfigDict:
    try:
        return cfg.lookup(alias)
    except (paramiko.SSHException, OSError, ValueError, ImportError) as exc:  # canonicalisation
        raise SSHConfigError(f"the ssh_config cannot be applied to {alias}: {exc}", "Simplify its Host or Match "
                             "block for this host.") from exc


def _port(found: paramiko.SSHConfigDict, alias: str) -> int:
    text = str(found.get("port", "22"))
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SSHConfigError(f"the ssh_config gives {alias} the port {text!r}", "Use a port number, 1 to 65535.")
    return int(text)


def _identity(found: paramiko.SSHConfigDict) -> str | None:
    """The first IdentityFile that exists (OpenSSH tries each; the agent is used when none is named)."""
    files = [os.path.expanduser(f) for f in found.get("identityfile", [])]
    existing = [f for f in files if os.path.isfile(f)]
    chosen = existing or files
    return chosen[0] if chosen else None


def _jumps(text: str, alias: str) -> list[tuple[str, int | None, str | None]]:
    """ProxyJump hops, first first: ``[user@]host[:port]`` or ``ssh://[user@]host[:port]``, comma separated."""
    if text.strip().lower() == "none":
        return []
    return [_jump(part.strip(), alias) for part in text.split(",")]


def _jump(part: str, alias: str) -> tuple[str, int | None, str | None]:
    rest = part.removeprefix("ssh://")
    user, _, hostport = rest.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):  # [v6]:port
        host, _, tail = hostport[1:].partition("]")
        port = tail.removeprefix(":") or None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        raise SSHConfigError(f"the ssh_config gives {alias} an unreadable ProxyJump hop {part!r}",
                             "Write ProxyJump as [user@]host[:port], hops separated by commas.")
    return host, int(port) if port else None, user or None


def resolve_all(hosts: Sequence[SSHHost], path: Path | None, defaults: Defaults, where: str) -> list[Target]:
    """Targets of every host; an unusable ssh_config is an SSHError naming the pool (``where``)."""
    try:
        cfg = load(path)
        return [resolve(h, cfg, defaults) for h in hosts]
    except SSHConfigError as exc:
        raise SSHError(exc.message, exc.hint, where) from exc


def check(hosts: Sequence[tuple[int, SSHHost]], declared: str | None,
          config_dir: Path) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Problems for ``validate`` with the pool's SSH hosts (by index): (location in the pool, message, fix)."""
    try:
        cfg = load(config_path(declared, config_dir))
    except SSHConfigError as exc:
        return [(("ssh_config",), exc.message, exc.hint)]
    out: list[tuple[tuple[str | int, ...], str, str]] = []
    defaults = Defaults("~/.ssh/known_hosts", False, 10.0)
    for i, host in hosts:
        try:
            resolve(host, cfg, defaults)
        except SSHConfigError as exc:
            out.append((("hosts", i), exc.message, exc.hint))
    return out


def render(targets: Sequence[tuple[str, Target]], identity: Callable[[str], str]) -> str:
    """An ssh_config holding exactly these resolved targets (under their aliases) and their jump hosts, with
    identity files mapped through ``identity`` (copied to a gateway host). Reading it back with :func:`resolve`
    gives the same targets."""
    blocks: dict[str, str] = {}
    for alias, target in targets:
        _render_hop(alias, target, identity, blocks)
    return "# written by gpuform: the pools' hosts as resolved from their ssh_config\n" + "".join(blocks.values())


def _render_hop(alias: str, t: Target, identity: Callable[[str], str], blocks: dict[str, str]) -> None:
    """``Host alias`` for ``t``; a jump host gets its own block, named by a hash of its route."""
    lines = [f"Host {alias}", f"  HostName {t.address}", f"  Port {t.port}", f"  User {t.user}"]
    if t.identity_file:
        lines.append(f"  IdentityFile {identity(t.identity_file)}")
    jump = "none"
    if t.jump is not None:
        jump = "gpuform-jump-" + hashlib.sha256(t.jump.route.encode()).hexdigest()[:12]
        _render_hop(jump, t.jump, identity, blocks)
    lines.append(f"  ProxyJump {jump}")
    blocks.setdefault(alias, "\n".join(lines) + "\n")
