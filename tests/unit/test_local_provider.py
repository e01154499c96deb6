"""The local provider's view of a worker process: the exit code of a worker that exits while it is being looked at
is not lost (a crash report says "exited with code N", never just "exited")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuform.provider import ProviderContext
from gpuform.providers.local import LocalPool
from gpuform.providers.local import provider as local
from gpuform.providers.local.provider import LocalProvider

pytestmark = pytest.mark.unit


class ExitsWhenLookedAt:
    """A child process that is still running until its liveness is checked, and has exited with code 3 after."""

    def __init__(self) -> None:
        self.exited = False

    def poll(self) -> int | None:
        return 3 if self.exited else None


def test_a_worker_that_exits_between_the_two_checks_keeps_its_exit_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = LocalProvider("p", LocalPool.model_validate({"provider": "local"}),
                         ProviderContext("lineage-1", tmp_path, tmp_path))
    made.workers_dir.mkdir(parents=True)
    (made.workers_dir / "w1.json").write_text(json.dumps(
        {"pid": 4242, "started": 1, "endpoint": "e", "lineage": "lineage-1"}))
    child = ExitsWhenLookedAt()
    made._children["w1"] = child  # type: ignore[assignment]

    def exits_now(pid: int, started: int | None = None) -> bool:
        child.exited = True
        return False

    monkeypatch.setattr(local.procs, "alive", exits_now)
    [info] = made.list_workers()
    assert (info.state, info.exit_code) == ("exited", 3)
