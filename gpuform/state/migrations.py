"""The state document's format versions and how an older one is upgraded (in memory, on read; the next
write saves the current format). A document from a newer gpuform is refused.

- 1 (gpuform 0.1.0): ``outputs`` as plain values; endpoints could carry the gateway's live status in
  ``computed.status`` (runtime data that never belonged in state).
- 2: ``outputs`` shaped like Terraform's (``{"NAME": {"value": …, "type": …, "sensitive": false}}``), and
  no runtime status in ``computed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuform.errors import StateError

STATE_VERSION = 2
Document = dict[str, Any]


def _v1_to_v2(doc: Document) -> Document:
    doc["outputs"] = {name: output_value(value) for name, value in (doc.get("outputs") or {}).items()}
    for res in doc.get("resources") or []:
        if res.get("kind") == "endpoint" and isinstance(res.get("computed"), dict):
            res["computed"].pop("status", None)
    return doc


UPGRADES: dict[int, Callable[[Document], Document]] = {1: _v1_to_v2}


def output_value(value: Any) -> dict[str, Any]:
    """An output as Terraform records it: its value, a type name, and whether it is sensitive."""
    kind = "string" if isinstance(value, str) else "number" if isinstance(value, int | float) and not isinstance(
        value, bool) else "bool" if isinstance(value, bool) else "object"
    return {"value": value, "type": kind, "sensitive": False}


def upgrade(doc: Document, where: str) -> Document:
    """``doc`` in the current format; StateError when its version is not a known integer."""
    version = doc.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StateError(f"{where} has format version {version!r}, which is not a positive integer",
                         "Restore it from its .backup copy, or set \"version\" to the number it was written with.")
    if version > STATE_VERSION:
        raise StateError(f"{where} was written by a newer gpuform (state format {version}; this one reads up to "
                         f"{STATE_VERSION})", "Upgrade gpuform to the version that wrote it, or newer.")
    serial = doc.get("serial")
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise StateError(f"{where} has serial {serial!r}; a serial is a whole number, 0 or more",
                         "Restore it from its .backup copy.")
    while version < STATE_VERSION:
        doc = UPGRADES[version](doc)
        version += 1
    doc["version"] = STATE_VERSION
    return doc
