"""Fuzz every route of a real gateway from its own OpenAPI description (schemathesis), with valid and invalid
inputs, as a client, as the admin and as a worker: nothing answers 5xx, and the gateway stays up.
The OpenAPI document lists every route the app has (checked first)."""

from __future__ import annotations

import contextlib
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from gpuform.gateway.app import build_app
from gpuform.gateway.runtime import Runtime
from gpuform.gateway.sqlite import SQLiteStore
from tests.gateway_harness import runtime_config
from tests.helpers import KEY, Deployment, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.security, pytest.mark.slow]
EXAMPLES = 12  # per operation and generation mode: a fixed budget, so the run takes the same time each time


@pytest.mark.unit
def test_the_openapi_document_lists_every_route() -> None:
    app = build_app(Runtime(runtime_config(), SQLiteStore(":memory:")))
    from gpuform.gateway.openapi import document

    paths = document(app.routes)["paths"]
    for route in app.routes:
        path = getattr(route, "path", "").replace("{route:path}", "{route}")
        if path.startswith("/console"):
            continue  # the console's pages (tests/unit/test_console.py feeds them bad input)
        for method in (getattr(route, "methods", None) or set()) - {"HEAD"}:
            assert method.lower() in paths.get(path, {}), f"{method} {path} is missing from /openapi.json"


def test_fuzzing_every_route_finds_no_server_error(deployment: Deployment) -> None:
    deployment.apply("""
        endpoints:
          echo:
            pool: here
            worker: {template: echo}
            model: {name: tiny}
            scaling: {min_workers: 1, max_workers: 1, idle_timeout: 60s}
        """)
    wait_for(lambda: deployment.status("echo")["ready_workers"] == 1, 30, what="a warm worker")
    admin_key = (deployment.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
    assert httpx.get(f"{deployment.url}/openapi.json").status_code == 401, "the API description needs a key"
    schema = schemathesis.openapi.from_url(f"{deployment.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"})
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        passes: list[tuple[GenerationMode, dict[str, str] | None]] = [
            (GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if "{endpoint}" in operation.path:  # and on the real endpoint, so requests get past the routing
            passes += [(GenerationMode.POSITIVE, {"endpoint": "echo"}), (GenerationMode.NEGATIVE, {"endpoint": "echo"})]
        for mode, path_parameters in passes:
            # the admin key, except where a valid request would change the deployment (register or delete an
            # endpoint): those are fuzzed with invalid bodies only
            changes = operation.method.upper() in ("PUT", "DELETE") and mode == GenerationMode.POSITIVE
            key = admin_key if operation.path.startswith("/admin") and not changes else KEY

            headers = {"Authorization": f"Bearer {key}"}

            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), derandomize=True)
            def call(case: schemathesis.Case) -> None:
                response = case.call(base_url=deployment.url, headers=headers, timeout=30)  # noqa: B023
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                         f"{response.text[:200]}")

            with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (no parameters, no body)
                call()
    print(f"fuzzed {sum(statuses.values())} requests: {dict(sorted(statuses.items()))}")
    assert not server_errors, server_errors[:10]
    assert httpx.get(f"{deployment.url}/healthz").status_code == 200
