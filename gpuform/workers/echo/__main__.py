"""The echo worker: ``python -m gpuform.workers.echo``. Runs the handler in :mod:`.handler` under the SDK, after
the start-up delay the environment asks for (:func:`.handler.startup_delay`)."""

import time

from gpuform.worker import start
from gpuform.workers.echo.handler import handler, startup_delay

time.sleep(startup_delay())
start(handler)
