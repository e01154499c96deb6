"""What providers need from a host's shell, over SSH (:class:`~gpuform.providers.common.ssh.Connection`) or
on this machine (:class:`LocalShell`, for docker pools that use a local socket)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from gpuform.errors import ProviderError
from gpuform.providers.common.ssh import Result, Target


class Shell(Protocol):
    target: Target

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 300.0, check: bool = True,
            env: dict[str, str] | None = None) -> Result: ...

    def put(self, local: Path | IO[bytes], remote: str,
            callback: Callable[[int, int], None] | None = None) -> None: ...

    def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...


class LocalShell:
    """This machine, with the same interface as an SSH connection."""

    def __init__(self) -> None:
        self.target = Target("localhost")

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 300.0, check: bool = True,
            env: dict[str, str] | None = None) -> Result:
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False,
                                  env={**os.environ, **(env or {})})
        except FileNotFoundError as exc:
            if check:
                raise ProviderError(f"{argv[0]}: command not found", "Install it or fix its path.") from exc
            return Result(127, b"", f"{argv[0]}: command not found".encode())  # as a shell would answer
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProviderError(f"running {argv[0]} failed: {exc}", "Check the command and its path.") from exc
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise ProviderError(f"{shlex.join(argv)[:200]} exited {proc.returncode}: "
                                f"{(proc.stderr or proc.stdout).decode(errors='replace')[-1500:]}",
                                "See the command's output above.")
        return result

    def put(self, local: Path | IO[bytes], remote: str, callback: Callable[[int, int], None] | None = None) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(local, Path):
            shutil.copyfile(local, remote)
            size = local.stat().st_size
        else:
            with open(remote, "wb") as out:
                shutil.copyfileobj(local, out)
            size = os.path.getsize(remote)
        if callback is not None:
            callback(size, size)

    def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        tmp = f"{remote}.gpuform-tmp-{uuid.uuid4().hex[:12]}"  # writers of one file (the CLI, a gateway) never share it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, remote)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)
