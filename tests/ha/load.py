"""Steady client load for the HA tests: a few threads submitting jobs (each with an Idempotency-Key, so a
request whose answer was lost can be sent again safely), recording every answer, and checking afterwards
that every accepted job id answers with its result."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer (or the failure) came
    status: int  # HTTP status; 0: no answer (connection refused or reset, timeout)
    retry_after: str | None = None


@dataclass
class Settled:
    """A finished load: its failed answers, how many were accepted when resent, each accepted job's status."""

    failed: list[Answer]
    resent: int
    final: dict[str, str]


@dataclass
class Load:
    """``clients`` threads, each sending ``POST /v2/{endpoint}/run`` (or ``runsync``) back to back until stopped."""

    base_url: str
    key: str
    endpoint: str = "echo"
    clients: int = 4
    payload: dict[str, Any] = field(default_factory=lambda: {"sleep": 0.05})
    route: str = "run"
    limit: int | None = None  # requests to send in all (None: until stopped)
    answers: list[Answer] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> its Idempotency-Key
    unanswered: list[str] = field(default_factory=list)  # Idempotency-Keys of requests that got no 2xx
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _issued: int = 0

    def start(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def halt(self) -> None:
        """Send no more requests; those in flight go on (:meth:`stop` waits for them)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30) as http:
            while not self._stop.is_set():
                with self._lock:
                    if self.limit is not None and self._issued >= self.limit:
                        return
                    self._issued += 1
                self._send(http, uuid.uuid4().hex)

    def _send(self, http: httpx.Client, idem: str) -> int:
        try:
            resp = http.post(f"/v2/{self.endpoint}/{self.route}", json={"input": {**self.payload, "idem": idem}},
                             headers={"Idempotency-Key": idem})
            answer = Answer(time.monotonic(), resp.status_code, resp.headers.get("Retry-After"))
            job_id = resp.json().get("id") if resp.status_code < 300 else None
        except (httpx.HTTPError, ValueError):
            answer, job_id = Answer(time.monotonic(), 0), None
        with self._lock:
            self.answers.append(answer)
            if job_id:
                self.accepted[job_id] = idem
            else:
                self.unanswered.append(idem)
        return answer.status

    def resend_unanswered(self) -> int:
        """Send every request that got no 2xx again with its Idempotency-Key; return how many are now accepted."""
        keys, self.unanswered = self.unanswered, []
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=30) as http:
            return sum(1 for idem in keys if self._send(http, idem) < 300)

    def settle(self, timeout: float = 240) -> Settled:
        """Once every client has sent its ``limit`` (within 120 s): the failed answers, how many of those were
        accepted when sent again with their Idempotency-Key, and every accepted job's final status."""
        deadline = time.monotonic() + 120
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "the clients did not finish within 120 s"
        failed = self.failed()
        resent = self.resend_unanswered()
        return Settled(failed, resent, wait_all_done(self.base_url, self.key, list(self.accepted), self.endpoint,
                                                     timeout))

    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    def failed(self) -> list[Answer]:
        """Answers that were not a success (0 = no answer at all)."""
        return [a for a in self.answers if not 200 <= a.status < 300]

    def outage(self) -> float:
        """Seconds from the first failed answer to the last one (0 when none failed)."""
        failed = self.failed()
        return failed[-1].at - failed[0].at if failed else 0.0


def wait_all_done(base_url: str, key: str, job_ids: list[str], endpoint: str = "echo",
                  timeout: float = 180) -> dict[str, str]:
    """Poll every job until it is final; return id -> status (jobs still open at the timeout are listed so)."""
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
    out: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        pending = list(job_ids)
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                try:
                    resp = http.get(f"/v2/{endpoint}/status/{job_id}")
                    status = resp.json().get("status", f"HTTP {resp.status_code}") if resp.status_code == 200 \
                        else f"HTTP {resp.status_code}"
                except (httpx.HTTPError, ValueError):
                    status = "unreachable"
                out[job_id] = status
                if status not in final:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(0.5)
    return out
