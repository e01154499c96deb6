"""Located diagnostics, printed like a compiler: ``gpuform.yaml:12:5: error: summary``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Severity = Literal["error", "warning"]
Path = tuple[str | int, ...]


class Location(NamedTuple):
    """A 1-based position in a source file (a named tuple: one is made for every value of a configuration)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem: what (summary), why and how to fix it (detail), where (source, address)."""

    severity: Severity
    summary: str
    detail: str = ""
    source: Location | None = None
    address: str = ""
    path: Path = field(default=())

    def render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = f"{self.address}: " if self.address and not self.source else ""
        text = f"{where}{self.severity}: {what}{self.summary}"
        if self.detail:
            text += "\n  " + self.detail.replace("\n", "\n  ")
        return text

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"severity": self.severity, "summary": self.summary, "detail": self.detail}
        if self.address:
            out["address"] = self.address
        if self.source:
            out["range"] = {
                "filename": self.source.file,
                "start": {"line": self.source.line, "column": self.source.col},
            }
        return out


def error(summary: str, detail: str = "", source: Location | None = None, address: str = "") -> Diagnostic:
    return Diagnostic("error", summary, detail, source, address)


def warning(summary: str, detail: str = "", source: Location | None = None, address: str = "") -> Diagnostic:
    return Diagnostic("warning", summary, detail, source, address)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``' Did you mean "x"?'`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""


def has_errors(diags: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diags)


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    if d.source is None:
        return ("~", 0, 0, d.summary)
    return (d.source.file, d.source.line, d.source.col, d.summary)
