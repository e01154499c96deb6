"""State backends by name: where state lives, chosen by the configuration's ``backend:`` block.

``local`` (the default) keeps the state file in a directory beside the configuration. A backend is a
factory from its options to a :class:`~gpuform.state.store.StateStore`; the memory backend is registered
for tests only (the configuration schema does not offer it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuform.errors import StateError
from gpuform.state.memory import MemoryStateStore
from gpuform.state.store import LocalStateStore, StateStore


@dataclass(frozen=True)
class BackendRequest:
    """What a backend factory is given: its options from the configuration, and where the configuration is."""

    options: Mapping[str, Any]
    config_dir: Path
    state_dir: Path | None = None  # --state-dir, for backends that keep files


Factory = Callable[[BackendRequest], StateStore]


def _local(request: BackendRequest) -> StateStore:
    if request.state_dir is not None:
        return LocalStateStore(request.state_dir.resolve())
    path = request.options.get("path") or "state"
    return LocalStateStore((request.config_dir / str(path)).resolve())


_MEMORY: dict[str, MemoryStateStore] = {}


def _memory(request: BackendRequest) -> StateStore:
    name = str(request.options.get("name", "default"))
    return _MEMORY.setdefault(name, MemoryStateStore(name))


BACKENDS: dict[str, Factory] = {"local": _local, "memory": _memory}


def open_store(kind: str, request: BackendRequest) -> StateStore:
    factory = BACKENDS.get(kind)
    if factory is None:
        raise StateError(f'unknown state backend "{kind}"', f"Use one of: {', '.join(sorted(BACKENDS))}.")
    return factory(request)
