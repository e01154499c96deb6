"""Run the gateway under uvicorn (uvloop + httptools where available)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import ValidationError

from gpuform.errors import GpuformError
from gpuform.gateway import logs
from gpuform.gateway.app import build_app
from gpuform.gateway.edge import BodyLimit, guarded_protocol
from gpuform.gateway.runtime import Runtime
from gpuform.gateway.tls import server_options
from gpuform.spec import GatewaySettings, RuntimeConfig

log = logging.getLogger("gpuform.gateway")


def load_config(path: Path) -> RuntimeConfig:
    try:
        return RuntimeConfig.load(path)
    except OSError as exc:
        raise GpuformError(f"cannot read the gateway configuration {path}: {exc.strerror}",
                           "Run `gpuform apply`, which writes it.") from exc
    except ValidationError as exc:
        raise GpuformError(f"the gateway configuration {path} is not valid: {exc.errors()[0]['msg']} at "
                           f"{'.'.join(str(p) for p in exc.errors()[0]['loc'])}",
                           "It is written by `gpuform apply`; apply again with this gpuform version.") from exc


def serve(config_path: Path, listen: str | None = None) -> int:
    config = load_config(config_path)
    host, _, port = (listen or config.listen).rpartition(":")
    logs.configure(config.gateway.log_level, config.gateway.log_format)
    tls = server_options(config.tls)  # before anything starts: a file that will not load is a clear error
    runtime = Runtime(config, config_path=config_path)
    settings = config.gateway
    raise_file_limit()
    protocol = guarded_protocol(settings.limits, route_body_limit(settings), settings.trusted_proxies,
                                settings.proxy_protocol)
    server = uvicorn.Server(uvicorn.Config(
        build_app(runtime), host=host.strip("[]"), port=int(port), log_level=settings.log_level, log_config=None,
        access_log=settings.log_level == "debug", loop="auto", http=protocol,
        proxy_headers=bool(settings.trusted_proxies), forwarded_allow_ips=settings.trusted_proxies or None,
        timeout_graceful_shutdown=int(config.timings.drain_timeout) + 5, **tls))
    gc.collect()
    gc.freeze()  # start-up objects (modules, the app, restored state) are never collected: keep them out of GC walks
    exit_handler = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        delay = runtime.shutdown_delay()
        if runtime.draining or delay <= 0:  # a second signal while draining stops at once
            runtime.begin_shutdown()  # long-polls answer now, so the graceful shutdown is quick
            exit_handler(sig, frame)
            return
        runtime.begin_draining()  # the load balancer takes this replica out before its port closes
        log.info("draining for %gs before closing the port (timings.shutdown_delay)", delay)
        timer = threading.Timer(delay, exit_handler, (sig, None))
        timer.daemon = True
        timer.start()

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    runtime.on_restart = lambda: os.kill(os.getpid(), signal.SIGTERM)  # its supervisor starts it again
    server.run()
    return 0


RESTORE_BODY_LIMIT = 1 << 40  # a database backup (admin only, read after the key is checked): the disk is the limit


def route_body_limit(settings: GatewaySettings) -> BodyLimit:
    """The largest body each route family takes (enforced while it streams in, by the edge)."""
    limits = settings.limits

    def limit(method: str, path: str) -> int:
        if path == "/admin/restore":
            return RESTORE_BODY_LIMIT
        if path.startswith("/admin/"):
            return limits.max_admin_body
        if path.rstrip("/").endswith("/run"):
            return settings.max_payload_run
        if any(part in path for part in ("/runsync", "/openai/", "/job-done/", "/job-stream/")) or \
                path.startswith("/v1/"):
            return settings.max_payload_runsync
        return limits.max_other_body

    return limit


def raise_file_limit() -> None:
    """Allow as many open files as the hard limit does (each connection is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuform gateway")
    parser.add_argument("--config", required=True, type=Path, help="runtime configuration written by apply")
    parser.add_argument("--listen", help="override host:port")
    args = parser.parse_args(argv)
    try:
        return serve(args.config, args.listen)
    except GpuformError as exc:
        print(f"gpuform gateway: error: {exc}", file=sys.stderr)
        return 1
