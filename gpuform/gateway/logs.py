"""The gateway's own log: text lines, or (``log_format: json``) one JSON object per line.

A JSON line holds ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger`` and ``message``, then
``job_id``, ``endpoint`` and ``worker_id`` when the line is about a job or a worker (the ``job_id`` is the
id the client got from ``/run``, ``/runsync`` or an OpenAI call, the RunPod job id), and ``exception`` with
the traceback of a logged exception. Code passes those fields with :func:`job_fields` /
:func:`worker_fields` as ``extra=``; nothing is formatted unless the line is emitted.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpuform.gateway.jobs import Job

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("job_id", "endpoint", "worker_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (never a line break inside: messages are JSON-escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _iso(record.created), "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def configure(level: str, fmt: str) -> None:
    """Send every logger's records (uvicorn's included) to stderr as ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def job_fields(job: Job) -> dict[str, Any]:
    """``extra=`` for a line about ``job``."""
    return {"job_id": job.id, "endpoint": job.endpoint, "worker_id": job.worker_id}


def worker_fields(worker_id: str, endpoint: str) -> dict[str, Any]:
    """``extra=`` for a line about a worker."""
    return {"worker_id": worker_id, "endpoint": endpoint}
