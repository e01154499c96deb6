"""Jobs → the vLLM OpenAI server on loopback. Input shapes (as RunPod's worker-vllm accepts them):

1. ``{"openai_route": "/v1/chat/completions", "openai_input": {...}}`` — what the gateway's OpenAI routes make;
2. ``{"route": "/v1/...", "body": {...}, "method": "POST"}`` — any vLLM route;
3. ``{"prompt" | "messages": ..., "sampling_params": {...}, "stream": bool}`` — the legacy shape.

With ``stream: true`` the job yields the server's SSE events as text (``data: {...}\\n\\n``) the moment they
arrive; otherwise its output is the server's JSON. An error from vLLM (4xx) becomes the job's output as
OpenAI's error object, so clients see vLLM's message; a missing ``model`` is filled with the served name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gpuform.worker import JobError


class VLLMProxy:
    def __init__(self, base_url: str, served_model: str, timeout: float = 3600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.served_model = served_model
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def handle(self, job: dict[str, Any]) -> Any:
        route, body, method = self.route_of(job["input"])
        if method == "GET":
            return await self._json("GET", route, None)
        if body.get("stream"):
            return self._stream(route, body)
        return await self._json("POST", route, body)

    def route_of(self, data: Any) -> tuple[str, dict[str, Any], str]:
        if not isinstance(data, dict):
            raise JobError("the input must be an object", error_type="BadInput")
        if "openai_route" in data:
            body = dict(data.get("openai_input") or {})
            return (str(data["openai_route"]), self._with_model(body), "POST") if body else \
                (str(data["openai_route"]), {}, "GET")
        if "route" in data:
            body = dict(data.get("body") or {})
            method = str(data.get("method") or ("POST" if body else "GET")).upper()
            return str(data["route"]), self._with_model(body) if method == "POST" else body, method
        if "messages" in data or "prompt" in data:
            key = "messages" if "messages" in data else "prompt"
            body = {key: data[key], **(data.get("sampling_params") or {}), "stream": bool(data.get("stream"))}
            route = "/v1/chat/completions" if key == "messages" else "/v1/completions"
            return route, self._with_model(body), "POST"
        raise JobError('input needs "openai_route", "route", "messages" or "prompt"', error_type="BadInput")

    def _with_model(self, body: dict[str, Any]) -> dict[str, Any]:
        body.setdefault("model", self.served_model)
        return body

    async def _json(self, method: str, route: str, body: dict[str, Any] | None) -> Any:
        try:
            async with self.session().request(method, self.base_url + route, json=body) as resp:
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise JobError(f"vLLM did not answer {method} {route}: {exc}", error_type="VLLMUnavailable") from exc
        if resp.status >= 400 and isinstance(data, dict) and "error" not in data:
            data = {"error": {"message": str(data), "type": "vllm_error", "code": resp.status}}
        return data

    async def _stream(self, route: str, body: dict[str, Any]) -> AsyncIterator[str]:
        try:
            async with self.session().post(self.base_url + route, json=body) as resp:
                if resp.status >= 400:
                    data = await resp.json(content_type=None)
                    yield "data: " + _json_text(data) + "\n\n"
                    return
                event: list[str] = []
                async for raw in resp.content:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if line:
                        event.append(line)
                        continue
                    if event:
                        yield "\n".join(event) + "\n\n"
                        event = []
                if event:
                    yield "\n".join(event) + "\n\n"
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JobError(f"vLLM stream broke: {exc}", error_type="VLLMUnavailable") from exc

    async def control(self, command: str) -> None:
        """Sleep mode (GPU only in vLLM): ``sleep`` frees the weights and KV cache; ``wake`` restores them."""
        route = {"sleep": "/sleep?level=1", "wake": "/wake_up"}[command]
        async with self.session().post(self.base_url + route) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"vLLM {route} answered {resp.status}: {await resp.text()}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _json_text(data: Any) -> str:
    import json

    return json.dumps(data)
