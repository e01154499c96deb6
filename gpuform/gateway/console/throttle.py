"""Failed console logins, per client address: after ``failures`` wrong keys within ``window`` seconds the
address is refused (429 with Retry-After) until the oldest of them is out of the window. Bounded memory: at
most ``max_tracked`` addresses, the least recently failing forgotten first."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class LoginThrottle:
    failures: int = 10
    window: float = 300.0
    max_tracked: int = 10_000
    _seen: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def retry_after(self, peer: str, now: float) -> int:
        """0 when ``peer`` may try a key now; otherwise the seconds it must wait."""
        times = self._recent(peer, now)
        if len(times) < self.failures:
            return 0
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, peer: str, now: float) -> None:
        times = self._recent(peer, now)
        times.append(now)
        self._seen[peer] = times
        self._seen.move_to_end(peer)
        while len(self._seen) > self.max_tracked:
            self._seen.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        self._seen.pop(peer, None)

    def _recent(self, peer: str, now: float) -> deque[float]:
        times = self._seen.get(peer, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            self._seen.pop(peer, None)
        return times
