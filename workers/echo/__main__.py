"""The echo worker: ``python -m gpuform.workers.echo``. Runs the handler in :mod:`.handler` under the SDK."""

from gpuform.worker import start
from gpuform.workers.echo.handler import handler

start(handler)
