"""Request traces: arrival times, and what sizes each request.

Formats, chosen by the file's suffix:

- CSV (any suffix but ``.jsonl``/``.ndjson``) with a header row: the Azure LLM inference trace as published
  (``TIMESTAMP,ContextTokens,GeneratedTokens``), or any CSV with a timestamp column;
- JSONL: one JSON object per line with the same keys.

Columns (case, ``_`` and spaces ignored): the time (``timestamp``, ``time``, ``ts``, ``arrival``,
``created_at``): ISO 8601 (naive times are UTC) or epoch seconds; optionally tokens (``ContextTokens`` or
``prompt_tokens``, ``GeneratedTokens`` or ``completion_tokens``) and a measured ``service_time`` in seconds
(``execution_time`` too). The first timestamp is the simulation's t0. Every bad line is reported with its
file:line:column, all in one pass (up to :data:`MAX_ERRORS`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpuform.diagnostics import Diagnostic, Location, error
from gpuform.errors import InputError

MAX_ERRORS = 20
_TIME = ("timestamp", "time", "ts", "arrival", "arrivaltime", "createdat")
_CONTEXT = ("contexttokens", "prompttokens", "inputtokens")
_GENERATED = ("generatedtokens", "completiontokens", "outputtokens")
_SERVICE = ("servicetime", "executiontime")
HINT_TIME = "Write ISO 8601 (2023-11-16 18:15:46.68 or 2023-11-16T18:15:46Z) or epoch seconds (1700158546.68)."


@dataclass(frozen=True)
class Request:
    at: float  # epoch seconds
    context_tokens: int | None = None
    generated_tokens: int | None = None
    service_time: float | None = None  # measured, seconds


@dataclass(frozen=True)
class Trace:
    name: str
    requests: tuple[Request, ...]

    @property
    def t0(self) -> float:
        return self.requests[0].at

    @property
    def span(self) -> float:
        return self.requests[-1].at - self.requests[0].at

    @property
    def has_tokens(self) -> bool:
        return all(r.context_tokens is not None and r.generated_tokens is not None for r in self.requests)

    @property
    def has_service_times(self) -> bool:
        return all(r.service_time is not None for r in self.requests)


class _Errors:
    """Diagnostics collected in one pass, capped at MAX_ERRORS."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.found: list[Diagnostic] = []
        self.more = 0

    @property
    def count(self) -> int:
        return len(self.found) + self.more

    def add(self, line: int, col: int, summary: str, hint: str) -> None:
        if len(self.found) < MAX_ERRORS:
            self.found.append(error(summary, hint, Location(self.path, line, col)))
        else:
            self.more += 1

    def raise_any(self) -> None:
        if self.found:
            if self.more:
                self.found.append(error(f"{self.more} more error(s) in {self.path} not shown"))
            raise InputError(self.found, f"{self.path}: {len(self.found)} error(s) in the trace")


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "").replace(" ", "").replace("-", "")


def parse_time(text: str) -> float:
    """Epoch seconds from ISO 8601 (naive means UTC) or a number of seconds; raises ValueError."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def read_trace(path: Path) -> Trace:
    """Read a trace (sorted by arrival); raises :class:`InputError` locating every bad line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([error(f"cannot read the trace {path}: {exc}", "Pass a readable CSV or JSONL file "
                                "with --trace.")], f"cannot read the trace {path}") from None
    errors = _Errors(str(path))
    rows = _jsonl(text, errors) if path.suffix.lower() in (".jsonl", ".ndjson") else _csv(text, errors)
    requests = [r for r in rows if r is not None]
    errors.raise_any()
    if not requests:
        raise InputError([error(f"the trace {path} holds no requests", "Give a file with a header row and one "
                                "request per line.", Location(str(path), 1, 1))], f"{path}: empty trace")
    requests.sort(key=lambda r: r.at)
    return Trace(path.name, tuple(requests))


# ---- CSV ----------------------------------------------------------------------------------------------


def _csv(text: str, errors: _Errors) -> Iterator[Request | None]:
    lines = text.splitlines()
    if not lines:
        return
    header = next(csv.reader([lines[0]]))
    columns = _columns(header)
    if columns.get("time") is None:
        errors.add(1, 1, f"no timestamp column in the header ({', '.join(header)})",
                   "Name one column timestamp (or TIMESTAMP, time, ts, arrival, created_at).")
        return
    for number, line in enumerate(lines[1:], start=2):
        if line.strip():
            yield _csv_row(line, number, header, columns, errors)


def _columns(header: list[str]) -> dict[str, int | None]:
    keys = [_key(h) for h in header]

    def find(names: tuple[str, ...]) -> int | None:
        return next((i for i, k in enumerate(keys) if k in names), None)

    return {"time": find(_TIME), "context": find(_CONTEXT), "generated": find(_GENERATED),
            "service": find(_SERVICE)}


def _offsets(fields: list[str]) -> list[int]:
    """1-based columns where each field starts (exact for unquoted fields)."""
    out, pos = [], 1
    for f in fields:
        out.append(pos)
        pos += len(f) + 1
    return out


def _csv_row(line: str, number: int, header: list[str], columns: dict[str, int | None],
             errors: _Errors) -> Request | None:
    fields = next(csv.reader([line]))
    if len(fields) != len(header):
        errors.add(number, 1, f"{len(fields)} field(s), the header has {len(header)}",
                   f"Write one value per column: {', '.join(header)}.")
        return None
    cols = _offsets(fields)
    values: dict[str, Any] = {}
    for role, index in columns.items():
        if index is not None:
            values[role] = (fields[index], cols[index], header[index])
    return _request(values, number, errors)


# ---- JSONL --------------------------------------------------------------------------------------------


def _jsonl(text: str, errors: _Errors) -> Iterator[Request | None]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.add(number, exc.colno, f"not JSON: {exc.msg}", "Write one JSON object per line.")
            continue
        if not isinstance(obj, dict):
            errors.add(number, 1, "not a JSON object", 'Write one object per line, e.g. {"timestamp": 12.5}.')
            continue
        yield _json_row(obj, line, number, errors)


def _json_row(obj: dict[str, Any], line: str, number: int, errors: _Errors) -> Request | None:
    keys = {_key(k): k for k in obj}
    values: dict[str, Any] = {}
    for role, names in (("time", _TIME), ("context", _CONTEXT), ("generated", _GENERATED), ("service", _SERVICE)):
        key = next((keys[n] for n in names if n in keys), None)
        if key is not None:
            col = line.find(json.dumps(key)) + 1 or 1
            values[role] = ("" if obj[key] is None else str(obj[key]), col, key)
    if "time" not in values:
        errors.add(number, 1, "no timestamp", 'Give each object a "timestamp" (ISO 8601 or epoch seconds).')
        return None
    return _request(values, number, errors)


# ---- fields -------------------------------------------------------------------------------------------


def _request(values: dict[str, Any], number: int, errors: _Errors) -> Request | None:
    text, col, name = values["time"]
    try:
        at = parse_time(text)
    except (ValueError, OverflowError, OSError):
        errors.add(number, col, f'{name} "{text}" is not a time', HINT_TIME)
        return None
    before = errors.count
    context = _count(values.get("context"), number, errors)
    generated = _count(values.get("generated"), number, errors)
    service = _seconds(values.get("service"), number, errors)
    return Request(at, context, generated, service) if errors.count == before else None


def _count(value: tuple[str, int, str] | None, number: int, errors: _Errors) -> int | None:
    if value is None or not value[0].strip():
        return None
    text, col, name = value
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        errors.add(number, col, f'{name} "{text}" is not a token count', "Write a whole number ≥ 0.")
        return None
    return count


def _seconds(value: tuple[str, int, str] | None, number: int, errors: _Errors) -> float | None:
    if value is None or not value[0].strip():
        return None
    text, col, name = value
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and seconds >= 0):
        errors.add(number, col, f'{name} "{text}" is not a number of seconds', "Write seconds ≥ 0, e.g. 1.25.")
        return None
    return seconds
