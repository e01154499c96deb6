"""The build identity of this gpuform: its version plus a digest of its own source, so two builds of one
version from different code differ. A gateway's ``version`` attribute is this value: the control plane records
the one it would run, the gateway reports the one it runs, and a new gpuform plans the gateway's update."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import gpuform

OVERRIDE = "GPUFORM_BUILD_ID"  # a packager's own build id (or a test's faked upgrade); read by the control plane
_OWN = ("providers", "workers")  # packaged under gpuform/ in a wheel, beside it in a checkout: left out of both


def build_id() -> str:
    """``VERSION+gDIGEST``, the digest over the contents of gpuform's own modules (the same in a checkout and
    in the wheel built from it); ``$GPUFORM_BUILD_ID`` when set."""
    return os.environ.get(OVERRIDE) or _computed()


@cache
def _computed() -> str:
    root = Path(gpuform.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in _OWN or "__pycache__" in rel.parts:
            continue
        h.update(f"{rel.as_posix()}\0".encode())
        h.update(path.read_bytes())
    return f"{gpuform.__version__}+g{h.hexdigest()[:12]}"
