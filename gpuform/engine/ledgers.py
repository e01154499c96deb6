"""A gateway's billing ledger belongs to its deployment (the state's lineage), not to one gateway process.

Destroying or replacing a gateway first copies its ledger rows into the lineage's directory on this machine
(``DATA_ROOT/deployments/LINEAGE/ledgers/gateway.NAME.json``, mode 0600); the next gateway of that name and
lineage is given them when it starts (it adds only the rows of workers and days it lacks, so giving them twice
counts once). The file is kept: a later replacement carries every row again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpuform.engine.context import Workspace


def _path(ws: Workspace, lineage: str, gateway: str) -> Path:
    return ws.runtime_dir(lineage) / "ledgers" / f"gateway.{gateway}.json"


def kept(ws: Workspace, lineage: str, gateway: str) -> list[dict[str, Any]]:
    """The rows kept for the gateway ([] when none were)."""
    try:
        data = json.loads(_path(ws, lineage, gateway).read_text())
    except (OSError, ValueError):
        return []
    return [row for row in data.get("entries", []) if isinstance(row, dict)]


def keep(ws: Workspace, lineage: str, gateway: str, entries: list[dict[str, Any]]) -> int:
    """Merge ``entries`` (a gateway's rows, which win) into the kept rows; returns how many are kept."""
    merged = {(str(r.get("worker_id")), str(r.get("day"))): r for r in kept(ws, lineage, gateway)}
    merged.update({(str(r.get("worker_id")), str(r.get("day"))): r for r in entries})
    path = _path(ws, lineage, gateway)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"gateway": gateway, "lineage": lineage, "entries": list(merged.values())}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return len(merged)
