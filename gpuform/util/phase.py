"""Report a worker start-up phase to the gateway before the SDK runs (standard library only, so a worker can
report as soon as its process is up, before heavy imports)."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request


def report_phase_now(phase: str, at: float | None = None) -> None:
    """Blocking POST to the gateway's worker-event route; quiet when there is no gateway."""
    url, token = os.environ.get("GPUFORM_WORKER_EVENTS"), os.environ.get("RUNPOD_AI_API_KEY")
    if not url or not token:
        return
    body = json.dumps({"phase": phase, "at": at if at is not None else time.time()}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Authorization": token, "Content-Type": "application/json"})
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=5).close()
