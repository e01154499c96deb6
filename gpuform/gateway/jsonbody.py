"""JSON at the gateway's edge: what clients send is checked strictly, what workers send is made safe.

- Client, OpenAI and admin bodies (:func:`loads_strict`): non-finite numbers (``NaN``, ``Infinity``,
  ``1e999``), lone UTF-16 surrogates (``"\\ud800"``) and nesting deeper than the limit are refused with
  :class:`BadJSON`, which the routes answer with 400.
- Worker results and stream chunks (:func:`loads_lenient`): a handler's output is stored and served as
  valid JSON whatever it holds: non-finite floats become ``null`` and lone surrogates become U+FFFD
  (docs/runpod-protocol.md says so). A worker's result must never make ``/status`` fail.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BadJSON(ValueError):
    """A body the gateway refuses; the message says what is wrong."""


def _reject_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not valid JSON (numbers must be finite)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"the number {text[:40]} is out of range (numbers must be finite)")
    return value


def _null_constant(name: str) -> Any:
    return None


def _finite_or_null(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def loads_strict(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a client's body; raise :class:`BadJSON` for anything that is not plain, finite JSON."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except BadJSON:
        raise
    except RecursionError:
        raise BadJSON(f"the JSON is nested more than {max_depth} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJSON(f"the body is not valid JSON: {exc}") from None
    _check_shape(value, raw, max_depth, strict=True)
    return value


def loads_lenient(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse what a worker sent; non-finite numbers become None, lone surrogates U+FFFD.
    Raises :class:`BadJSON` only for bodies that are not JSON at all (or nested too deeply)."""
    try:
        value = json.loads(raw.decode("utf-8", errors="replace"), parse_constant=_null_constant,
                           parse_float=_finite_or_null)
    except RecursionError:
        raise BadJSON(f"the JSON is nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise BadJSON(f"the body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw):
        value = _replace_surrogates(value)
    _check_shape(value, raw, max_depth, strict=False)
    return value


def _check_shape(value: Any, raw: bytes, max_depth: int, strict: bool) -> None:
    """Depth and (strictly) lone surrogates; walks the value only when the raw text makes it necessary."""
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    surrogates = strict and _SURROGATE_ESCAPE.search(raw) is not None
    if not (deep or surrogates):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise BadJSON(f"the JSON is nested more than {max_depth} levels deep")
            children = list(item.items()) if isinstance(item, dict) else [(None, v) for v in item]
            for key, child in children:
                if surrogates and isinstance(key, str):
                    _no_surrogates(key)
                stack.append((child, depth + 1))
        elif surrogates and isinstance(item, str):
            _no_surrogates(item)


def _no_surrogates(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadJSON("the JSON holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not valid "
                      "Unicode; send text as UTF-8") from None


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value) if _has_surrogate(value) \
            else value
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def safe_text(value: object, limit: int = 500) -> str:
    """Text that came from a worker, fit for a message to a client: JSON for structures, no control or
    direction-changing characters, at most ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = _CONTROL.sub("?", text.replace("\n", " ").replace("\t", " "))
    return text if len(text) <= limit else text[: limit - 1] + "…"
