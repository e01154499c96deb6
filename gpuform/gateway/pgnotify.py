"""LISTEN on a PostgreSQL channel from a thread of its own, delivering each notification to the event loop.

The listening connection is dedicated (the store's connection runs statements; a LISTEN there would only see
notifications between them). When it breaks (the database restarted, the backend was terminated, the network
failed) the thread connects again, pausing between attempts; each time it is listening (the first time too:
requests may wait before it is) it calls ``reconnected`` in the loop, because notifications sent before are
lost: every waiter should look again. TCP keepalives make
a silently dead connection fail within about 15 seconds; waiters re-check on a short timeout anyway, so a
lost notification costs latency, never a stuck request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

log = logging.getLogger("gpuform.gateway")

POLL = 0.5  # how often the thread looks at its stop flag while no notification comes
RETRY_PAUSE = 0.5  # between connection attempts, doubling while they fail, up to
RETRY_PAUSE_MAX = 5.0


class Listener:
    """Delivers the payloads of ``channel``'s notifications to ``deliver`` in ``loop``'s thread."""

    def __init__(self, url: str, channel: str, loop: asyncio.AbstractEventLoop, deliver: Callable[[str], None],
                 reconnected: Callable[[], None]) -> None:
        self.url = url
        self.channel = channel
        self.loop = loop
        self.deliver = deliver
        self.reconnected = reconnected
        self.connections = 0  # how many times it has started listening (a test's view of reconnects)
        self.failures = 0  # connection failures in a row
        self.backend_pid: int | None = None
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pg-listen-{channel}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening; prompt when a notification follows the call (else within ``POLL`` seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        pause = RETRY_PAUSE
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                self.listening.clear()
                self.failures += 1
                if self.failures == 1 and not self._stop.is_set():
                    log.warning("the queue's notification listener lost PostgreSQL (%s); reconnecting",
                                type(exc).__name__)
            pause = RETRY_PAUSE if self.failures <= 1 else min(pause * 2, RETRY_PAUSE_MAX)
            self._stop.wait(pause)

    def _listen(self) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name="gpuform-listen",
                             keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.backend_pid = conn.info.backend_pid
            self.connections += 1
            if self.failures > 1:
                log.warning("the queue's notification listener reached PostgreSQL again")
            # Notifications sent before this LISTEN (while reconnecting, or at start, when a request may already
            # wait: a runsync submitted the moment the replica listened on HTTP) are lost: every waiter looks again
            # (scheduled before ``listening`` is set, so whoever waits for that is not woken by it).
            self._call(self.reconnected)
            self.listening.set()
            self.failures = 0
            while not self._stop.is_set():
                for note in conn.notifies(timeout=POLL):
                    if self._stop.is_set():
                        return
                    self._call(self.deliver, note.payload)

    def _call(self, func: Callable[..., None], *args: str) -> None:
        try:
            self.loop.call_soon_threadsafe(func, *args)
        except RuntimeError:  # the loop is closed: the gateway is gone
            self._stop.set()
