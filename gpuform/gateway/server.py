"""Run the gateway under uvicorn (uvloop + httptools where available)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from gpuform.gateway.app import build_app
from gpuform.gateway.config import RuntimeConfig
from gpuform.gateway.runtime import Runtime


def serve(config_path: Path, listen: str | None = None) -> int:
    config = RuntimeConfig.load(config_path)
    host, _, port = (listen or config.gateway.listen).rpartition(":")
    logging.basicConfig(level=config.gateway.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app(Runtime(config))
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level=config.gateway.log_level,
                access_log=config.gateway.log_level == "debug", loop="auto", http="auto",
                timeout_graceful_shutdown=int(config.timings.drain_timeout) + 5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuform gateway")
    parser.add_argument("--config", required=True, type=Path, help="runtime configuration written by apply")
    parser.add_argument("--listen", help="override host:port")
    args = parser.parse_args(argv)
    return serve(args.config, args.listen)
