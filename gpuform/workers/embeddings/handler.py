"""Text embeddings with a transformers encoder from the endpoint's volume, answered in OpenAI's shape.

Job inputs:

1. ``{"openai_route": "/v1/embeddings", "openai_input": {"input": ..., "model": ..., "encoding_format": ...}}``
   — what the gateway's OpenAI routes make (``POST /v1/embeddings`` routed by ``model``, or
   ``/v2/{endpoint}/openai/v1/embeddings``); ``GET .../v1/models`` lists the served name;
2. the OpenAI body itself, ``{"input": "text" | ["text", ...] | [token ids] | [[token ids], ...]}`` —
   RunPod-style ``/run`` and ``/runsync`` (as RunPod's infinity embedding worker takes it).

``encoding_format`` ``float`` (the default) gives lists of floats; ``base64`` gives little-endian float32
bytes in base64, which the ``openai`` Python client asks for unless told otherwise. ``dimensions`` truncates
each vector (then re-normalises it when ``NORMALIZE`` is on). A malformed request answers OpenAI's error
object with code 400 (the gateway returns it with that status); nothing else fails the worker.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Vectors = list[list[float]]
Encode = Callable[[list[str] | list[list[int]]], tuple[Vectors, int]]  # (vectors, tokens used)


class BadRequest(ValueError):
    """The request is malformed; the message says how to fix it."""


@dataclass(frozen=True)
class EmbeddingRequest:
    inputs: list[str] | list[list[int]]
    encoding_format: str
    dimensions: int | None
    model: str


def parse(body: Any, served: str, max_inputs: int) -> EmbeddingRequest:
    """The request in ``body`` (an OpenAI embeddings body); raises BadRequest."""
    if not isinstance(body, dict) or "input" not in body:
        raise BadRequest('the body needs "input": a string, a list of strings, or token ids')
    inputs = _inputs(body["input"])
    if not 0 < len(inputs) <= max_inputs:
        raise BadRequest(f'"input" must hold 1 to {max_inputs} items (MAX_BATCH_SIZE); it holds {len(inputs)}')
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest(f'"encoding_format" must be "float" or "base64", not {encoding!r}')
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise BadRequest('"dimensions" must be a whole number of at least 1')
    return EmbeddingRequest(inputs, encoding, dimensions, str(body.get("model") or served))


def _inputs(value: Any) -> list[str] | list[list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(type(v) is int for v in value):
        return [list(value)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and all(isinstance(v, list) and v and all(type(t) is int for t in v) for v in value):
        return [list(v) for v in value]
    raise BadRequest('"input" must be a string, a list of strings, a list of token ids, or a list of those lists')


def shape(vector: Sequence[float], dimensions: int | None, normalize: bool) -> list[float]:
    """``vector`` cut to ``dimensions`` (re-normalised to length 1 when ``normalize``)."""
    out = [float(x) for x in (vector[:dimensions] if dimensions else vector)]
    if dimensions and normalize:
        norm = sum(x * x for x in out) ** 0.5
        out = [x / norm for x in out] if norm else out
    return out


def encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def response(request: EmbeddingRequest, vectors: Vectors, tokens: int, normalize: bool) -> dict[str, Any]:
    """OpenAI's embeddings response."""
    data = [{"object": "embedding", "index": i,
             "embedding": encoded(shape(v, request.dimensions, normalize), request.encoding_format)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def bad_request(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": 400}}


@dataclass
class EmbeddingsHandler:
    """The job handler: routes, parses, encodes with ``encode`` (the model), answers."""

    encode: Encode
    served: str
    normalize: bool = True
    max_inputs: int = 256

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        data = job["input"]
        if isinstance(data, dict) and "openai_route" in data:
            route = str(data["openai_route"])
            if route.endswith("/models"):
                return {"object": "list", "data": [{"id": self.served, "object": "model", "owned_by": "gpuform"}]}
            if not route.endswith("/embeddings"):
                return bad_request(f"this endpoint serves embeddings: POST /v1/embeddings, not {route}")
            data = data.get("openai_input")
        try:
            request = parse(data, self.served, self.max_inputs)
        except BadRequest as exc:
            return bad_request(str(exc))
        vectors, tokens = self.encode(request.inputs)
        return response(request, vectors, tokens, self.normalize)
