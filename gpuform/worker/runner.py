"""The worker loop: take jobs, run the handler, stream chunks, post results, send heartbeats, obey stops.

It speaks RunPod's worker protocol (the ``RUNPOD_WEBHOOK_*`` variables the gateway injects), so the same
gateway serves workers written with this SDK and with the ``runpod`` package. Over HTTPS it verifies the
gateway against the system's roots, or ``SSL_CERT_FILE`` when the gateway sets it (a private CA), and presents
``GPUFORM_TLS_CLIENT_CERT``/``GPUFORM_TLS_CLIENT_KEY`` when the gateway asks for a client certificate (mTLS).
With gateway replicas it fails over across ``GPUFORM_GATEWAY_URLS`` (see :mod:`gpuform.worker.failover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import ssl
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gpuform.worker.failover import UNAVAILABLE, Gateways

log = logging.getLogger("gpuform.worker")
MAX_REFUSALS = 5  # a worker whose token the gateway refuses this many times in a row exits (code 3)
Handler = Callable[[dict[str, Any]], Any]


class JobError(Exception):
    """Raise from a handler to fail the job with a structured error (type, message, details)."""

    def __init__(self, message: str, error_type: str = "JobError", details: Any = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.details = details

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error_type": self.error_type, "error_message": str(self)}
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass
class Settings:
    take_url: str
    done_url: str
    stream_url: str
    ping_url: str
    events_url: str
    worker_id: str
    token: str
    ping_interval: float
    concurrency: int
    take_timeout: float
    aggregate_stream: bool = True
    client_cert: str | None = None
    client_key: str | None = None
    gateway_urls: str = ""  # GPUFORM_GATEWAY_URLS: every replica's base URL, to fail over across

    def tls(self) -> ssl.SSLContext | bool:
        """The TLS context for the gateway: the default one (which reads SSL_CERT_FILE), plus the client
        certificate when there is one."""
        if not self.client_cert:
            return True
        context = ssl.create_default_context()
        context.load_cert_chain(self.client_cert, self.client_key)
        return context

    @classmethod
    def from_env(cls, concurrency: int | None = None, aggregate_stream: bool = True) -> Settings:
        env = os.environ
        missing = [k for k in ("RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_POD_ID",
                               "RUNPOD_AI_API_KEY") if not env.get(k)]
        if missing:
            raise SystemExit(f"gpuform worker: {', '.join(missing)} not set; workers are started by the gateway "
                             "(for a local test, run the handler function directly)")
        worker_id = env["RUNPOD_POD_ID"]
        return cls(take_url=env["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", worker_id),
                   done_url=env["RUNPOD_WEBHOOK_POST_OUTPUT"].replace("$RUNPOD_POD_ID", worker_id),
                   stream_url=env.get("RUNPOD_WEBHOOK_POST_STREAM", "").replace("$RUNPOD_POD_ID", worker_id),
                   ping_url=env.get("RUNPOD_WEBHOOK_PING", "").replace("$RUNPOD_POD_ID", worker_id),
                   events_url=env.get("GPUFORM_WORKER_EVENTS", ""), worker_id=worker_id,
                   token=env["RUNPOD_AI_API_KEY"],
                   ping_interval=max(1.0, int(env.get("RUNPOD_PING_INTERVAL", "10000")) / 1000),
                   concurrency=concurrency or int(env.get("GPUFORM_CONCURRENCY", "1")),
                   take_timeout=float(env.get("GPUFORM_TAKE_TIMEOUT", "30")), aggregate_stream=aggregate_stream,
                   client_cert=env.get("GPUFORM_TLS_CLIENT_CERT"), client_key=env.get("GPUFORM_TLS_CLIENT_KEY"),
                   gateway_urls=env.get("GPUFORM_GATEWAY_URLS", ""))


@dataclass
class _Running:
    job: dict[str, Any]
    task: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)


class Worker:
    def __init__(self, handler: Handler, settings: Settings) -> None:
        self.handler = handler
        self.s = settings
        self.running: dict[str, _Running] = {}
        self.stopping = asyncio.Event()
        self.slot_free = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.control: Callable[[str], Awaitable[None]] | None = None
        self.exit_code = 0
        self.gateways = Gateways.from_env(settings.take_url, settings.gateway_urls)

    def _session(self) -> aiohttp.ClientSession:
        if self.http is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.s.take_timeout + 30)
            connector = aiohttp.TCPConnector(limit=0, ssl=self.s.tls())
            self.http = aiohttp.ClientSession(headers={"Authorization": self.s.token}, timeout=timeout,
                                              connector=connector, trust_env=False)
        return self.http

    async def _get(self, url: str, timeout: float | None = None) -> tuple[int, bytes]:
        """GET ``url`` on the current replica; a connection failure or a 502/503 moves to the next one."""
        limit = aiohttp.ClientTimeout(total=timeout) if timeout else None
        target = self.gateways.url(url)
        try:
            async with self._session().get(target, timeout=limit) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            self.gateways.failed(target)
            raise
        if resp.status in UNAVAILABLE:
            self.gateways.failed(target)
        return resp.status, body

    # ---- loops --------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopping.set)
        await self.report("runtime_ready")
        background = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._stops())]
        try:
            await self._take_loop()
            while self.running:  # drain: jobs in flight finish and post their results
                await asyncio.wait([r.task for r in self.running.values()])
        finally:
            for task in background:
                task.cancel()
            await self._session().close()

    async def _take_loop(self) -> None:
        failures = refused = 0
        while not self.stopping.is_set():
            free = self.s.concurrency - len(self.running)
            if free <= 0:
                self.slot_free.clear()
                await _first(self.slot_free.wait(), self.stopping.wait())
                continue
            url = self.s.take_url
            if free > 1:
                url = url.replace("/job-take/", "/job-take-batch/") + f"&batch_size={free}"
            url += f"&job_in_progress={1 if self.running else 0}"
            try:
                answer = await _first(self._get(url), self.stopping.wait())
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                log.warning("job-take failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(min(5.0, 0.5 * failures))
                continue
            if answer is None:
                return  # stopping
            failures = 0
            status, body = answer
            refused = refused + 1 if status in (401, 403) else 0
            if refused >= MAX_REFUSALS:
                log.error("the gateway refused this worker's token %d times in a row (%s); exiting: the worker "
                          "belongs to a gateway that no longer knows it", refused, body[:200])
                self.stopping.set()
                self.exit_code = 3
                return
            if status == 200 and body:
                data = json.loads(body)
                for job in data if isinstance(data, list) else [data]:
                    self._start(job)
            elif status == 429:
                await asyncio.sleep(5)
            elif status != 204:
                log.warning("job-take answered %s: %s", status, body[:200])
                await asyncio.sleep(1)

    def _start(self, job: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run_job(job))
        self.running[job["id"]] = _Running(job, task)

    async def _heartbeat(self) -> None:
        while True:
            url = self.s.ping_url
            if self.running:
                url += ("&" if "?" in url else "?") + "job_id=" + ",".join(self.running)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._get(url, timeout=self.s.ping_interval * 2)
            await asyncio.sleep(self.s.ping_interval)

    async def _stops(self) -> None:
        if "/job-take/" not in self.s.take_url:
            return
        url = self.s.take_url.replace("/job-take/", "/job-stop/")
        while True:
            try:
                status, body = await self._get(url)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(1)
                continue
            if status == 200 and body:
                message = json.loads(body)
                for job_id in message.get("jobsToStop") or []:
                    running = self.running.get(str(job_id))
                    if running is not None:
                        running.task.cancel()
                if message.get("control") and self.control is not None:
                    await self._control(str(message["control"]))
            else:
                await asyncio.sleep(1)

    async def _control(self, command: str) -> None:
        """A gpuform extension of the stop channel (``"control": "sleep" | "wake"``); RunPod's SDK ignores it."""
        assert self.control is not None
        try:
            await self.control(command)
        except Exception:  # reported to the gateway as a failed phase; the worker keeps running
            log.exception("control %s failed", command)
            await self.report(f"{command}_failed")
            return
        await self.report({"sleep": "asleep", "wake": "awake"}.get(command, command))

    # ---- one job ------------------------------------------------------------------------------------

    async def _run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        try:
            body = await self._call(job)
            await self._post(self.s.done_url, job_id, body, is_stream=bool(body.pop("_streamed", False)))
        except asyncio.CancelledError:
            log.info("job %s stopped by the gateway", job_id)
        finally:
            self.running.pop(job_id, None)
            self.slot_free.set()

    async def _call(self, job: dict[str, Any]) -> dict[str, Any]:
        try:
            if inspect.iscoroutinefunction(self.handler) or inspect.isasyncgenfunction(self.handler):
                result = self.handler(job)
            else:  # sync handlers run in a thread, so heartbeats and stop signals keep flowing
                result = await asyncio.to_thread(self.handler, job)
            if inspect.isawaitable(result):
                result = await result
            if inspect.isgenerator(result) or inspect.isasyncgen(result):
                return await self._stream(job["id"], result)
            return _result_body(result)
        except asyncio.CancelledError:
            raise
        except JobError as exc:
            return {"error": exc.to_json()}
        except Exception as exc:  # the handler's failure becomes the job's error, never the worker's
            return {"error": {"error_type": type(exc).__name__, "error_message": str(exc),
                              "error_traceback": traceback.format_exc()}}

    async def _stream(self, job_id: str, gen: Iterator[Any] | AsyncIterator[Any]) -> dict[str, Any]:
        chunks: list[Any] = []
        try:
            async for chunk in _aiter(gen):
                if isinstance(chunk, dict) and chunk.get("error"):
                    return {"error": chunk["error"], "_streamed": True}
                chunks.append(chunk)
                await self._post(self.s.stream_url, job_id, {"output": chunk}, is_stream=False)
        except JobError as exc:
            return {"error": exc.to_json(), "_streamed": True}
        return {"output": chunks if self.s.aggregate_stream else [], "_streamed": True}

    async def _post(self, template: str, job_id: str, body: dict[str, Any], is_stream: bool) -> None:
        """POST a result or chunk; a replica that fails it passes it to the next one (three tries on each)."""
        route = template.replace("$ID", job_id) + f"&isStream={'true' if is_stream else 'false'}"
        payload = json.dumps(body, default=str)
        for attempt in range(self.gateways.attempts(3)):
            url = self.gateways.url(route)
            try:
                async with self._session().post(url, data=payload,
                                                headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status < 500:
                        return
                    if resp.status in UNAVAILABLE:
                        self.gateways.failed(url)
            except (aiohttp.ClientError, TimeoutError):
                self.gateways.failed(url)
            await asyncio.sleep(0.2 if self.gateways.url(route) != url else min(5.0, 1.0 + attempt))
        log.error("could not deliver the result of job %s", job_id)

    async def report(self, phase: str) -> None:
        if not self.s.events_url:
            return
        url = self.gateways.url(self.s.events_url)
        try:
            async with self._session().post(url, json={"phase": phase, "at": time.time()}) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            self.gateways.failed(url)

    def progress(self, job: dict[str, Any], value: Any) -> None:
        """Thread-safe: post an IN_PROGRESS update for ``job``."""
        if self.loop is None:
            return
        coro = self._post(self.s.done_url, job["id"], {"status": "IN_PROGRESS", "output": value}, is_stream=False)
        if threading.current_thread() is threading.main_thread():
            self.loop.create_task(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, self.loop)


def _result_body(result: Any) -> dict[str, Any]:
    if isinstance(result, dict) and result.get("error"):
        rest = {k: v for k, v in result.items() if k != "error"}
        return {"error": result["error"], **({"output": rest} if rest else {})}
    return {"output": result}


async def _aiter(gen: Iterator[Any] | AsyncIterator[Any]) -> AsyncIterator[Any]:
    if inspect.isasyncgen(gen):
        async for item in gen:
            yield item
        return
    sync_gen = iter(gen)  # type: ignore[arg-type]
    done = object()
    while True:
        item = await asyncio.to_thread(next, sync_gen, done)
        if item is done:
            return
        yield item


async def _first(*aws: Any) -> Any:
    """Await the first of ``aws`` to finish; cancel the others. Returns the first one's result (or None)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    first = tasks[0]
    return first.result() if first in done else None
