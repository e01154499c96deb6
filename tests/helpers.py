"""A deployed gateway for runtime tests: apply a configuration with the local provider, then talk to it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from gpuform.gateway.client import AdminClient
from tests.conftest import local_config, run_gpuform, write_config

T = TypeVar("T")
KEY = "test-key"


@dataclass
class Deployment:
    workdir: Path
    port: int
    env: dict[str, str] | None = None  # what the last apply needed (its config's ${env.*}); destroy needs it too

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self) -> AdminClient:
        key = (self.workdir / "state" / "secrets" / "gateway.main.admin_key").read_text()
        return AdminClient(self.url, key)

    def http(self, key: str | None = KEY, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    def apply(self, endpoints: str, extra: str = "", gateway_extra: str = "") -> str:
        text = local_config(self.port, extra, endpoints)
        if gateway_extra:
            text = text.replace("    api_keys: {test: test-key}\n", "    api_keys: {test: test-key}\n" + gateway_extra)
        return self.apply_text(text)

    def apply_text(self, text: str, env: dict[str, str] | None = None) -> str:
        write_config(self.workdir, text)
        self.env = env
        result = run_gpuform("-C", str(self.workdir), "apply", "--auto-approve", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def status(self, endpoint: str) -> dict[str, Any]:
        with self.admin() as admin:
            result: dict[str, Any] = admin.get(f"/admin/endpoints/{endpoint}/status")
            return result

    def workers(self, endpoint: str, states: tuple[str, ...] = ("initializing", "idle", "running")) -> list[dict]:  # type: ignore[type-arg]
        return [w for w in self.status(endpoint)["worker_list"] if w["state"] in states]

    def wait_unhealthy(self, http: httpx.Client, endpoint: str, timeout: float = 30) -> dict[str, Any]:
        """The endpoint's ``/health`` once it says UNHEALTHY."""
        return wait_for(lambda: (h := http.get(f"/v2/{endpoint}/health").json())["status"] == "UNHEALTHY" and h,
                        timeout, what=f"endpoint {endpoint} to be UNHEALTHY")

    def assert_backs_off(self, endpoint: str, seconds: float, message: str) -> None:
        """At most one more start in ``seconds``: failing workers are backed off, not restarted in a loop."""
        starts = len(self.status(endpoint)["worker_list"])
        time.sleep(seconds)
        assert len(self.status(endpoint)["worker_list"]) <= starts + 1, message


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
