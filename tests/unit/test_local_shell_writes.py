"""LocalShell.write_file from several threads at once (a docker pool on this machine: the CLI and the gateway
write the same file): each write has its own temporary file, so each lands whole and none fails."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gpuform.providers.common.shell import LocalShell

pytestmark = pytest.mark.unit


def test_concurrent_writes_of_one_file_all_succeed_and_one_lands_whole(tmp_path: Path) -> None:
    target, shell, errors = tmp_path / "agent.py", LocalShell(), []

    def write(byte: bytes) -> None:
        try:
            for _ in range(200):
                shell.write_file(str(target), byte * 20_000)
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in (b"a", b"b", b"c", b"d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert target.read_bytes() in [b * 20_000 for b in (b"a", b"b", b"c", b"d")]
    assert [p.name for p in tmp_path.iterdir()] == ["agent.py"]
