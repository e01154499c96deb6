"""Logging a failure that repeats while a dependency is down (PostgreSQL restarting: every request and every
reconcile tick fails the same way): the first one is logged at once, the next ones at most once per
``every`` seconds with how many were held back, so an outage of seconds does not write thousands of lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RepeatedFailure:
    """Logs ``message % args`` at ``level`` unless it logged less than ``every`` seconds ago (then counts it)."""

    def __init__(self, log: logging.Logger, level: int = logging.ERROR, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.level = level
        self.every = every
        self.clock = clock
        self.held = 0  # failures not logged since the last line
        self._last: float | None = None

    def __call__(self, message: str, *args: object) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            self.held += 1
            return
        if self.held:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, self.held, now - self._last if self._last is not None else 0.0)
        self.log.log(self.level, message, *args)
        self._last, self.held = now, 0
