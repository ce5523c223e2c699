"""Whose turn it is to ask for a call slot, within one worker process: first come, first served,
except that a job already delayed by a crash goes first.

In a process only one thread at a time asks Redis for a slot (:mod:`limits_redis`); the others
wait their turn. A plain lock hands the turn to an arbitrary waiter, so with 200 threads waiting
behind a lowered fleet target one job could wait many times the average. Here the turn passes in
order of arrival, and a job whose worker died (its copy waited for the dead worker's lease to
lapse) jumps the line, so that it is answered within the contract's minute of the death even
when the fleet is throttled (docs/guarantees.md, "Crash recovery").
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_overdue: ContextVar[bool] = ContextVar("overdue_job", default=False)


@contextmanager
def overdue_job(overdue: bool = True) -> Iterator[None]:
    """Mark the job this thread runs as delayed by a crash (or not) for the block."""
    token = _overdue.set(overdue)
    try:
        yield
    finally:
        _overdue.reset(token)


def is_overdue() -> bool:
    return _overdue.get()


class Turnstile:
    """A lock handed over in order: overdue waiters first, then by arrival."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._waiting: list[tuple[int, int, threading.Event]] = []
        self._arrivals = itertools.count()

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            if not self._busy:
                self._busy = True
                mine = None
            else:
                mine = threading.Event()
                rank = 0 if is_overdue() else 1
                heapq.heappush(self._waiting, (rank, next(self._arrivals), mine))
        if mine is not None:
            # The thread before hands the turn over directly: no race to take it.
            mine.wait()
        try:
            yield
        finally:
            with self._lock:
                if self._waiting:
                    heapq.heappop(self._waiting)[2].set()
                else:
                    self._busy = False
