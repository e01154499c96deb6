"""The gateway's own recent log lines, kept in memory for the console's live tail (this replica's lines; the
full log is on its host: ``gpuform logs --gateway``)."""

from __future__ import annotations

import logging
from collections import deque

LOGGER = "gpuform"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogTail(logging.Handler):
    """The last ``size`` formatted records of the ``gpuform`` loggers, numbered so a reader asks only for newer."""

    def __init__(self, size: int = 1000) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[tuple[int, str]] = deque(maxlen=size)
        self.count = 0
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted must not break the gateway
            return
        self.count += 1
        self.lines.append((self.count, text))

    def after(self, seen: int) -> tuple[int, list[str]]:
        """Lines numbered above ``seen``, and the number of the last one."""
        return self.count, [text for n, text in self.lines if n > seen]

    def attach(self) -> None:
        logger = logging.getLogger(LOGGER)
        logger.addHandler(self)

    def detach(self) -> None:
        logging.getLogger(LOGGER).removeHandler(self)
