"""The gateway's API as an OpenAPI 3.1 document (``GET /openapi.json``, any valid key).

Built from the app's routes, so a route cannot be missing (a test checks every one is here), with the
request bodies each route takes: RunPod's job body, the OpenAI bodies (passed through), the admin
endpoint spec (from its pydantic model) and the worker protocol's bodies.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Route

from gpuform import __version__
from gpuform.spec import EndpointPut

JOB_BODY: dict[str, Any] = {
    "type": "object", "required": ["input"],
    "properties": {
        "input": {"description": "What the handler receives as job['input']."},
        "webhook": {"type": "string", "format": "uri", "maxLength": 2048},
        "policy": {"type": "object", "properties": {
            "executionTimeout": {"type": "integer", "minimum": 5000, "maximum": 604800000},
            "ttl": {"type": "integer", "minimum": 10000, "maximum": 604800000},
            "lowPriority": {"type": "boolean"}}},
    },
}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
RESULT: dict[str, Any] = {"type": "object", "properties": {"output": {}, "error": {}, "status": {"type": "string"}}}
EVENT: dict[str, Any] = {"type": "object", "properties": {"phase": {"type": "string"}, "at": {"type": "number"}}}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def _body_schema(path: str, method: str) -> dict[str, Any] | None:
    if method != "POST" and not (method == "PUT" and path.startswith("/admin/endpoints/")):
        return None
    if path.endswith(("/run", "/runsync")):
        return JOB_BODY
    if method == "PUT":
        return {"$ref": "#/components/schemas/EndpointPut"}
    if "/job-done/" in path or "/job-stream/" in path:
        return RESULT
    if "/worker-event/" in path:
        return EVENT
    if "/openai/" in path or path.startswith("/v1/"):
        return ANY_OBJECT
    return None


def _operation(route: Route, method: str, path: str) -> dict[str, Any]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for name in _PARAM.findall(route.path)]
    if path.endswith("/runsync"):
        params.append({"name": "wait", "in": "query", "schema": {"type": "integer"}})
    doc = (route.endpoint.__doc__ or route.name or "").strip().splitlines()
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{route.name}_{abs(hash(path)) % 10_000}",
        "summary": doc[0] if doc else route.name, "parameters": params, "security": [{"key": []}],
        "responses": {"200": {"description": "Success", "content": {"application/json": {"schema": {}}}},
                      "default": {"description": "An error: {\"error\": …} (OpenAI routes: {\"error\": {…}})",
                                  "content": {"application/json": {"schema": {}}}}},
    }
    body = _body_schema(path, method)
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if path == "/healthz":
        op["security"] = []
    return op


def document(routes: list[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.path.startswith("/console"):
            continue  # the web console is pages for a browser on a session cookie, not an API (docs/console.md)
        path = _PARAM.sub(r"{\1}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(route, method, path)
    schemas = EndpointPut.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schemas.pop("$defs", {})
    return {"openapi": "3.1.0",
            "info": {"title": "gpuform gateway", "version": __version__,
                     "description": "RunPod-compatible endpoint API, OpenAI-compatible routes, the RunPod worker "
                                    "protocol and the admin API."},
            "paths": paths,
            "components": {"schemas": {"EndpointPut": schemas, **defs},
                           "securitySchemes": {"key": {"type": "http", "scheme": "bearer"}}}}
