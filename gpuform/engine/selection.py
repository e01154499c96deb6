"""What a configuration directory remembers on this machine (``.gpuform/``, never committed): the selected
workspace, and the backend ``gpuform init`` last set up (so a changed ``backend:`` block is noticed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DEFAULT = "default"


class Selection:
    def __init__(self, config_dir: Path) -> None:
        self.directory = config_dir / ".gpuform"

    def workspace(self) -> str:
        try:
            return (self.directory / "workspace").read_text(encoding="utf-8").strip() or DEFAULT
        except OSError:
            return DEFAULT

    def select(self, name: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "workspace").write_text(name + "\n", encoding="utf-8")

    def backend(self) -> dict[str, Any] | None:
        """The backend recorded by the last ``gpuform init`` (type and options without secrets)."""
        try:
            data: dict[str, Any] = json.loads((self.directory / "backend.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data

    def record_backend(self, kind: str, options: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "backend.json").write_text(json.dumps(fingerprint(kind, options), indent=2) + "\n",
                                                     encoding="utf-8")


def fingerprint(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """What identifies a backend, without its secrets (a URL is kept only as a hash)."""
    out: dict[str, Any] = {"type": kind, **{k: v for k, v in options.items() if k != "url" and v is not None}}
    if options.get("url"):
        out["url_sha"] = hashlib.sha256(str(options["url"]).encode()).hexdigest()[:16]
    return out
