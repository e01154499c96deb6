"""Jobs for a plain PyTorch model: tensors in, tensors out, as nested lists.

Input (``/run``, ``/runsync``)::

    {"inputs": [[0.1, 0.2, 0.3, 0.4]]}                  # model(x)
    {"args": [[[1, 2]], [[3, 4]]]}                      # model(x, y)
    {"kwargs": {"x": [[1, 2]]}, "dtype": "float64"}     # model(x=...), tensors of that dtype (float32 default)

Output: ``{"outputs": ...}`` — the model's tensor as a nested list; a tuple or list of tensors as a list of
them; a dict of tensors as a dict. A malformed input fails the job with ``BadInput`` and says what to send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpuform.worker import JobError

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
Run = Callable[["Call"], Any]  # the model, called with tensors made from a Call; returns JSON-ready outputs


@dataclass(frozen=True)
class Call:
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"


def parse(data: Any) -> Call:
    """The call ``data`` asks for; raises JobError (BadInput) saying what to send."""
    if not isinstance(data, dict) or not ({"inputs", "args", "kwargs"} & set(data)):
        raise JobError('input needs "inputs" (one tensor as nested lists), "args" (a list of them) or "kwargs"',
                       error_type="BadInput")
    dtype = str(data.get("dtype") or "float32")
    if dtype not in DTYPES:
        raise JobError(f'"dtype" must be one of {", ".join(DTYPES)}, not {dtype!r}', error_type="BadInput")
    args = [data["inputs"]] if "inputs" in data else list(data.get("args") or [])
    kwargs = data.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(_numeric(v) for v in [*args, *kwargs.values()]):
        raise JobError("each tensor must be a number or nested lists of numbers", error_type="BadInput")
    return Call(args, dict(kwargs), dtype)


def _numeric(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_numeric(v) for v in value)
    return isinstance(value, int | float)


@dataclass
class TorchHandler:
    run: Run

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        call = parse(job["input"])
        try:
            outputs = self.run(call)
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as exc:  # shapes or dtypes it refuses
            raise JobError(f"the model refused the input: {exc}", error_type="BadInput") from exc
        return {"outputs": outputs}
