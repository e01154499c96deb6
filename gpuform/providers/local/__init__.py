"""The ``local`` provider: pools on this machine; workers and the gateway are local processes."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from gpuform.config.schema import Endpoint, PoolBase
from gpuform.provider import Capability, ProviderSpec
from gpuform.workerspec import handler_file, interpreter, requirement_lines

Problems = list[tuple[tuple[str | int, ...], str]]


class LocalPool(PoolBase):
    """A pool made of this machine."""

    provider: Literal["local"] = Field(description="Runs workers as processes on this machine.")
    nvidia_smi: str = Field("nvidia-smi", description="Command that inventories GPUs (tests use a stand-in).")
    data_dir: str | None = Field(None, description="Where pid files and logs live; defaults to "
                                                   "~/.local/share/gpuform/deployments/LINEAGE/local/POOL "
                                                   "(GPUFORM_DATA_DIR moves it).")

    def host_labels(self) -> list[str]:
        return ["localhost"]


def worker_dir(endpoint: Endpoint, config_dir: Path) -> Path:
    """The worker's working directory: ``worker.workdir`` (from the configuration directory), else that."""
    return config_dir / endpoint.worker.workdir if endpoint.worker.workdir else config_dir


def requirements_file(endpoint: Endpoint, config_dir: Path) -> Path | None:
    """``requirements.txt`` beside the handler of a ``command: [python, handler.py]`` worker, when there is one."""
    handler = handler_file(endpoint.worker.command)
    if handler is None:
        return None
    found = (worker_dir(endpoint, config_dir) / handler).parent / "requirements.txt"
    return found if found.is_file() else None


def own_environment(python: str) -> bool:
    """Whether ``python`` (an interpreter or a virtualenv directory) is the environment gpuform runs in."""
    root = Path(python) if os.path.isdir(python) else Path(os.path.abspath(python)).parent.parent
    return root.resolve() == Path(sys.prefix).resolve()


def check_endpoint(pool: PoolBase, endpoint: Endpoint, config_dir: Path) -> Problems:
    """What a local worker needs from this machine: its handler, a Python that is not gpuform's own, and a
    requirements.txt that lists requirements only."""
    return [*_check_handler(endpoint, config_dir), *_check_python(endpoint), *_check_requirements(endpoint, config_dir)]


def _check_handler(endpoint: Endpoint, config_dir: Path) -> Problems:
    handler = handler_file(endpoint.worker.command)
    if handler is None or (worker_dir(endpoint, config_dir) / handler).is_file():
        return []
    index = (endpoint.worker.command or []).index(handler)
    return [(("worker", "command", index), f"the handler {handler} does not exist (looked in "
                                           f"{worker_dir(endpoint, config_dir)}); fix the path, or set "
                                           "worker.workdir to the directory it is in")]


def _check_python(endpoint: Endpoint) -> Problems:
    python = endpoint.worker.python
    return [(("worker", "python"), own_environment_problem(python))] if python and own_environment(python) else []


def own_environment_problem(python: str) -> str:
    return (f"{python} is the environment gpuform itself runs in; gpuform will not install into it. Leave `python` "
            "out (with `requirements`, gpuform builds an environment of its own) or name another virtualenv")


def python_problem(python: str | None) -> str | None:
    """What is wrong with ``worker.python`` on this machine (None when nothing is). Whether it exists is
    checked at plan and apply, not at validate (validate may run where the pool's machine is not)."""
    if not python:
        return None
    found = interpreter(python)
    if not (os.path.isfile(found) or ("/" not in found and shutil.which(found))):
        return (f"no Python at {python} on this machine; name an interpreter or a virtualenv directory that "
                "exists, or leave `python` out")
    return own_environment_problem(python) if own_environment(python) else None


def _check_requirements(endpoint: Endpoint, config_dir: Path) -> Problems:
    found = requirements_file(endpoint, config_dir)
    if found is None:
        return []
    options = [n for n, line in requirement_lines(found.read_text(errors="replace")) if line.startswith("-")]
    if options:
        return [(("worker", "command"), f"{found}:{options[0]}: pip options are not supported in a worker's "
                                        "requirements.txt; list one requirement per line")]
    return []


SPEC = ProviderSpec(
    name="local",
    pool_model=LocalPool,
    implementation="gpuform.providers.local.provider:LocalProvider",
    check_endpoint=check_endpoint,
    description="this machine: workers are local processes with pid files and logs under the state directory",
    capabilities=frozenset({Capability.WORKERS, Capability.GATEWAY, Capability.VOLUMES, Capability.GPU_PLACEMENT,
                            Capability.GPU_METRICS}),
)
