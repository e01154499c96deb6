"""Turn pydantic validation errors into located diagnostics with a fix hint."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from gpuform.config.yamlsrc import SourceMap
from gpuform.diagnostics import Diagnostic, Path, did_you_mean, error


def pydantic_diagnostics(exc: ValidationError, model: type[BaseModel], base: Path, sources: SourceMap,
                         address: str, body: Any) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for err in exc.errors(include_url=False):
        loc = _data_path(tuple(err["loc"]), body)
        field_path = ".".join(str(p) for p in loc) or "(fields)"
        full: Path = (*base, *loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed)
            detail = f"Remove it or fix its spelling.{hint}"
            if allowed and not hint:
                detail += f" Valid fields here: {', '.join(sorted(allowed))}."
            out.append(_at(error(f'unknown field "{loc[-1]}"', detail, sources.locate(full, key=True), address), full))
        elif kind == "missing":
            out.append(_at(error(f'missing required field "{field_path}"',
                                 f"Add `{loc[-1]}:` ({_describe(model, loc)}).", sources.locate(full[:-1]), address),
                           full))
        else:
            msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            out.append(_at(error(f"{field_path}: {msg}", _type_hint(kind, model, loc), sources.locate(full), address),
                           full))
    return out


def _at(diag: Diagnostic, path: Path) -> Diagnostic:
    return dataclasses.replace(diag, path=path)


def _data_path(loc: Path, body: Any) -> Path:
    """Drop location parts pydantic adds that are not in the data (union tags, validator names)."""
    out: list[str | int] = []
    node = body
    for part in loc:
        if _has(node, part):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part.isidentifier():
            node = None  # a missing field
        else:
            continue  # a part pydantic added: a union tag or a validator's name
        out.append(part)
    return tuple(out)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _unwrap(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(inner[0]) if len(inner) == 1 else annotation
    if origin is not None and str(origin).endswith("Annotated"):
        return _unwrap(get_args(annotation)[0])
    return annotation


def _model_at(model: type[BaseModel], loc: Path) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
            continue
        origin = get_origin(current)
        if origin in (dict, list):
            current = get_args(current)[-1]
            continue
        return None
    current = _unwrap(current)
    if get_origin(current) in (dict, list):
        current = _unwrap(get_args(current)[-1])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields_at(model: type[BaseModel], loc: Path) -> list[str]:
    found = _model_at(model, loc)
    return list(found.model_fields) if found else []


def _describe(model: type[BaseModel], loc: Path) -> str:
    parent = _model_at(model, loc[:-1])
    if parent is None:
        return "required"
    info = parent.model_fields.get(str(loc[-1]))
    return (info.description or "required") if info else "required"


def _type_hint(kind: str, model: type[BaseModel], loc: Path) -> str:
    field_text = _describe(model, loc) if loc else ""
    if kind.endswith("_type") or kind.endswith("_parsing") or kind in ("literal_error", "enum"):
        return f"Expected: {field_text}" if field_text and field_text != "required" else "Fix the value's type."
    return f"`{loc[-1]}`: {field_text}" if field_text and field_text != "required" else "Fix the value."
