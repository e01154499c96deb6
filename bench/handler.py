"""The handler both sides of bench/gateway.py run: returns its input (plus nothing else)."""

from __future__ import annotations

from typing import Any


def handler(job: dict[str, Any]) -> Any:
    return job["input"]
