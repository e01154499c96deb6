"""The runtime's vocabulary: job statuses (RunPod's) and worker states, with the worker state machine.

Worker states and the transitions allowed between them::

    initializing ──> idle <──> running
         │            │  ╲        │
         │            │  sleeping ┤        (vLLM sleep mode: woken back to initializing)
         ▼            ▼     ▼     ▼
      unhealthy    stopping ──> stopped

A worker is ``initializing`` until its first contact, ``idle`` or ``running`` while it is live, ``stopping``
while the provider stops it, and ends ``stopped`` (stopped on purpose, or exited after it was ready) or
``unhealthy`` (failed to start or exited before it was ready). Every change goes through
:func:`check_transition`; anything else is a bug and raises :class:`IllegalTransition`.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})
OPEN = frozenset({JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS})


class WorkerState(StrEnum):
    INITIALIZING = "initializing"
    IDLE = "idle"
    RUNNING = "running"
    SLEEPING = "sleeping"
    STOPPING = "stopping"
    STOPPED = "stopped"
    UNHEALTHY = "unhealthy"

    @property
    def live(self) -> bool:
        return self in LIVE


LIVE = frozenset({WorkerState.INITIALIZING, WorkerState.IDLE, WorkerState.RUNNING})
ENDED = frozenset({WorkerState.STOPPED, WorkerState.UNHEALTHY})

_ALLOWED: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.INITIALIZING: frozenset({WorkerState.IDLE, WorkerState.RUNNING, WorkerState.STOPPING,
                                         WorkerState.STOPPED, WorkerState.UNHEALTHY}),
    WorkerState.IDLE: frozenset({WorkerState.RUNNING, WorkerState.SLEEPING, WorkerState.STOPPING,
                                 WorkerState.STOPPED, WorkerState.UNHEALTHY}),
    WorkerState.RUNNING: frozenset({WorkerState.IDLE, WorkerState.STOPPING, WorkerState.STOPPED,
                                    WorkerState.UNHEALTHY}),
    WorkerState.SLEEPING: frozenset({WorkerState.INITIALIZING, WorkerState.STOPPING, WorkerState.STOPPED,
                                     WorkerState.UNHEALTHY}),
    WorkerState.STOPPING: frozenset({WorkerState.STOPPED, WorkerState.UNHEALTHY}),
    WorkerState.STOPPED: frozenset(),
    WorkerState.UNHEALTHY: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A worker was asked to move between states the state machine does not connect (a gateway bug)."""

    def __init__(self, worker_id: str, old: WorkerState, new: WorkerState) -> None:
        super().__init__(f"worker {worker_id}: illegal transition {old} -> {new}")
        self.old, self.new = old, new


def check_transition(worker_id: str, old: WorkerState, new: WorkerState) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is allowed (staying put always is)."""
    if old != new and new not in _ALLOWED[old]:
        raise IllegalTransition(worker_id, old, new)
