"""Run the gateway under uvicorn (uvloop + httptools where available)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import ValidationError

from gpuform.errors import GpuformError
from gpuform.gateway.app import build_app
from gpuform.gateway.runtime import Runtime
from gpuform.spec import RuntimeConfig


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
    host, _, port = (listen or config.gateway.listen).rpartition(":")
    logging.basicConfig(level=config.gateway.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime = Runtime(config)
    server = uvicorn.Server(uvicorn.Config(
        build_app(runtime), host=host.strip("[]"), port=int(port), log_level=config.gateway.log_level,
        access_log=config.gateway.log_level == "debug", loop="auto", http="auto",
        timeout_graceful_shutdown=int(config.timings.drain_timeout) + 5))
    exit_handler = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        runtime.begin_shutdown()  # long-polls answer now, so the graceful shutdown is quick
        exit_handler(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    server.run()
    return 0


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
