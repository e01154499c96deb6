"""State backends by name: where state lives, chosen by the configuration's ``backend:`` block, with one
state per workspace (dev, prod) in every backend, as Terraform does.

- ``local`` (the default): a directory beside the configuration (``state/``); the default workspace's state
  is ``state/gpuform.state.json``, another workspace's ``state/workspaces/NAME/gpuform.state.json``;
- ``postgres``: a PostgreSQL database (:mod:`gpuform.state.postgres`);
- ``memory``: for tests only (the configuration schema does not offer it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpuform.errors import StateError
from gpuform.state.memory import MemoryStateStore
from gpuform.state.store import LocalStateStore, StateStore

DEFAULT_WORKSPACE = "default"
WORKSPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Backend(Protocol):
    """A place that holds a state per workspace."""

    def store(self, workspace: str) -> StateStore: ...

    def workspaces(self) -> list[str]: ...

    def delete_workspace(self, name: str) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendRequest:
    """What a backend factory is given: its options from the configuration, and where the configuration is."""

    options: Mapping[str, Any]
    config_dir: Path
    state_dir: Path | None = None  # --state-dir, for backends that keep files
    secrets_key: str | None = None  # GPUFORM_SECRETS_KEY: seals generated secrets kept in a shared backend


class LocalBackend:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_of(self, workspace: str) -> Path:
        return self.directory if workspace == DEFAULT_WORKSPACE else self.directory / "workspaces" / workspace

    def store(self, workspace: str) -> StateStore:
        return LocalStateStore(self.path_of(workspace))

    def workspaces(self) -> list[str]:
        root = self.directory / "workspaces"
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return [DEFAULT_WORKSPACE, *found]

    def delete_workspace(self, name: str) -> None:
        shutil.rmtree(self.path_of(name), ignore_errors=True)

    def describe(self) -> str:
        return f"local ({self.directory})"

    def close(self) -> None:
        return None


class MemoryBackend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stores: dict[str, MemoryStateStore] = {}

    def store(self, workspace: str) -> StateStore:
        return self.stores.setdefault(workspace, MemoryStateStore(f"{self.name}/{workspace}"))

    def workspaces(self) -> list[str]:
        return sorted({DEFAULT_WORKSPACE, *self.stores})

    def delete_workspace(self, name: str) -> None:
        self.stores.pop(name, None)

    def describe(self) -> str:
        return f"memory ({self.name})"

    def close(self) -> None:
        return None


Factory = Callable[[BackendRequest], Backend]


def _local(request: BackendRequest) -> Backend:
    if request.state_dir is not None:
        return LocalBackend(request.state_dir.resolve())
    return LocalBackend((request.config_dir / str(request.options.get("path") or "state")).resolve())


_MEMORY: dict[str, MemoryBackend] = {}


def _memory(request: BackendRequest) -> Backend:
    name = str(request.options.get("name", "default"))
    return _MEMORY.setdefault(name, MemoryBackend(name))


def _postgres(request: BackendRequest) -> Backend:
    from gpuform.state.postgres import PostgresBackend

    url = request.options.get("url")
    if not url:
        raise StateError("the postgres backend needs a URL", "Set backend.url (e.g. \"${env.GPUFORM_BACKEND_URL}\"), "
                         "export GPUFORM_BACKEND_URL, or pass -backend-config url=postgresql://…")
    return PostgresBackend(str(url), str(request.options.get("schema_name") or "gpuform"),
                           int(request.options.get("history") or 20), request.secrets_key)


BACKENDS: dict[str, Factory] = {"local": _local, "memory": _memory, "postgres": _postgres}


def open_backend(kind: str, request: BackendRequest) -> Backend:
    factory = BACKENDS.get(kind)
    if factory is None:
        raise StateError(f'unknown state backend "{kind}"', f"Use one of: {', '.join(sorted(BACKENDS))}.")
    return factory(request)


def open_store(kind: str, request: BackendRequest, workspace: str = DEFAULT_WORKSPACE) -> StateStore:
    return open_backend(kind, request).store(workspace)


def check_workspace_name(name: str) -> str:
    if not WORKSPACE_NAME.match(name):
        raise StateError(f'"{name}" is not a valid workspace name',
                         "Use lower-case letters, digits, - and _, starting with a letter or digit.")
    return name
