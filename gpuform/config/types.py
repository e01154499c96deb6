"""Small value types used by the configuration schema: names, durations, sizes."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel as _PydanticBase
from pydantic import BeforeValidator, ConfigDict, Field, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


class Model(_PydanticBase):
    """Base of every configuration model: unknown fields are errors; values are immutable; numbers are finite
    and never booleans (YAML's ``true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """``true`` where a number belongs stays text, so the field's own check refuses it (located there)."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        bad = [k for k, v in data.items() if isinstance(v, bool) and k in fields and _numeric(fields[k].annotation)]
        return {**data, **{k: str(data[k]).lower() for k in bad}} if bad else data


def _numeric(annotation: Any) -> bool:
    """Whether a field's type is a number (int or float, possibly optional), and not also a bool or text."""
    args = set(getattr(annotation, "__args__", ()) or ())
    kinds = args if args else {annotation}
    kinds.discard(type(None))
    return bool(kinds) and kinds <= {int, float}


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number, or a string such as ``90s``, ``5m``, ``1h30m``, ``250ms``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f'"{value}" is not a duration; write e.g. 30s, 5m, 1h30m or 250ms')
    return total


def parse_size(value: Any) -> Any:
    """Accept bytes as an integer, or a string such as ``10MB`` or ``512KiB``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10MB")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value.strip())):
        return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    raise ValueError(f'"{value}" is not a size; write e.g. 10MB, 512KiB or a number of bytes')


MAX_DURATION = 365 * 86400.0
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=MAX_DURATION)]
Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0, le=1 << 50)]
Price = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1e6)]
Secret = Annotated[str, Field(min_length=1)]


def format_duration(seconds: float) -> str:
    """``90.0`` → ``1m30s``; used in plan output."""
    if seconds < 1 and seconds:
        return f"{round(seconds * 1000)}ms"
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out + (f"{rest}s" if rest or not out else "")
