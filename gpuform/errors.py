"""Every error gpuform raises descends from :class:`GpuformError`.

    GpuformError
    ├── ConfigError            bad configuration; carries located diagnostics
    ├── InputError             a file given on the command line (a request trace) is malformed; located too
    ├── StateError             the state file or its lock
    │   ├── StateLocked        another operation holds the lock
    │   └── StalePlan          a saved plan no longer matches state or config
    ├── PlanError              the plan cannot be made (prevent_destroy, bad target)
    ├── ProviderError          a provider could not do what was asked
    │   ├── SSHError           connection, authentication, host key, command failure
    │   ├── DockerError        the Docker engine refused or failed
    │   └── NoCapacity         no host has the GPUs asked for
    ├── GatewayError           the gateway's admin API answered an error or is unreachable
    ├── StoreError             the gateway's store (SQLite or PostgreSQL) cannot be opened, migrated or written
    │   ├── StoreFull          its disk is full
    │   └── Fenced             a gateway replica that no longer leads tried to start a worker
    └── Interrupted            the operation was cancelled (Ctrl-C)

Transport errors (paramiko, docker, httpx) are translated where they are caught, with
``raise ... from exc``; each message ends with how to fix the problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuform.diagnostics import Diagnostic


class GpuformError(Exception):
    """Root of the gpuform error tree. ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(GpuformError):
    """The configuration is invalid; ``diagnostics`` holds every located problem."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in the configuration")


class InputError(GpuformError):
    """A file named on the command line (not the configuration: a request trace) is malformed or unreadable;
    ``diagnostics`` locates every problem found (file:line:column)."""

    def __init__(self, diagnostics: list[Diagnostic], message: str = "") -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        super().__init__(message or f"{len(errors)} error(s) in the input")


class StateError(GpuformError):
    """The state could not be read, written or locked."""


class StateLocked(StateError):
    """Another process holds the state lock."""


class StalePlan(StateError):
    """A saved plan was made from a different state serial, lineage or config."""


class PlanError(GpuformError):
    """A plan cannot be made as asked."""


class ProviderError(GpuformError):
    """A provider failed; ``address`` names the resource or host concerned."""

    def __init__(self, message: str, hint: str = "", address: str = "") -> None:
        super().__init__(message, hint)
        self.address = address


class SSHError(ProviderError):
    """An SSH connection or remote command failed; ``unreachable`` when the host could not be reached."""

    def __init__(self, message: str, hint: str = "", address: str = "", unreachable: bool = False) -> None:
        super().__init__(message, hint, address)
        self.unreachable = unreachable


class DockerError(ProviderError):
    """The Docker engine refused or failed a request."""


class NoCapacity(ProviderError):
    """No host in the pool has free GPUs of any of the requested types."""


class GatewayError(GpuformError):
    """The gateway's admin API failed or could not be reached."""


class StoreError(GpuformError):
    """The gateway's store cannot be opened, migrated or written."""


class StoreFull(StoreError):
    """The gateway's store ran out of disk."""


class Fenced(StoreError):
    """A gateway replica tried to record a new worker with an epoch that is no longer the leader's: it was
    deposed, and must not start the worker."""


class Interrupted(GpuformError):
    """The operation was interrupted by the user."""
