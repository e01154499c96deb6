"""Run the gateway under uvicorn (uvloop + httptools where available)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import FrameType

import uvicorn

from gpuform.gateway.app import build_app
from gpuform.gateway.config import RuntimeConfig
from gpuform.gateway.runtime import Runtime


def serve(config_path: Path, listen: str | None = None) -> int:
    config = RuntimeConfig.load(config_path)
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
    return serve(args.config, args.listen)
