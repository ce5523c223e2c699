"""Fleet-wide limits on upstream calls: a concurrency cap, a rate, and adaptive back-off.

Every worker thread wraps its one API call in ``with limiter.slot():``. The slot is granted only
while fewer than the fleet's in-flight *target* calls are running and the rate allows another
call. The target starts at ``KLING_MAX_CONCURRENCY``; when the upstream answers 1302/1303/429 the
caller says so with :meth:`CallLimiter.report_busy` and the whole fleet cuts its target to 70 %
of what was in flight (multiplicative decrease), then grows it back by about one slot per round
of successful calls (additive increase), the way TCP shares a link. Only a busy answer to a call
that started after the last decrease lowers the target again: the calls already in flight when
the fleet slowed down say nothing new.

Two implementations share that contract:

- :class:`~worker.coordination.limits_redis.RedisLimiter` (``REDIS_URL`` set) holds across
  every process and node using the same Redis (its module says how).
- :class:`LocalLimiter` (no ``REDIS_URL``) holds within one process, with a condition variable.

Waiting never spins: in a process only one thread at a time asks Redis, sleeping between tries
for the rate's exact wait or a short, growing, jittered pause, and is woken early when a thread
of the same process gives a slot back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from contract.settings import Settings
from worker.errors import RetryableError, WorkerStopping
from worker.ops import metrics

logger = logging.getLogger(__name__)

#: Fraction of the calls in flight kept as the new target when the upstream says it is busy.
DECREASE_FACTOR = 0.7
#: When a busy report cannot be tied to a call (no slot taken in this thread), further reports
#: are ignored this long after a decrease, so one burst of answers does not collapse the target.
BUSY_COOL_DOWN_S = 0.5
#: A lowered target is forgotten this long after its last change, so a fleet that stopped while
#: backed off starts again at the full cap.
TARGET_MEMORY_S = 60.0
#: Shortest and longest pause between two tries while the concurrency cap is full.
MIN_POLL_S = 0.001
MAX_POLL_S = 0.01
#: How long a call's fleet-wide slot outlives its worker's last renewal, unless
#: ``KLING_SLOT_LEASE_SECONDS`` says otherwise: how soon a killed worker's slots come back.
DEFAULT_SLOT_LEASE_S = 10.0
#: How often a call waiting for a slot looks whether the worker is stopping.
STOP_CHECK_S = 0.25
#: The cap of :func:`unlimited`: more calls than any process runs at once.
UNLIMITED_CONCURRENCY = 1_000_000


class CallLimiter(Protocol):
    """What the pipeline needs: a slot around each upstream call, and a way to say "busy"."""

    def slot(self) -> AbstractContextManager[None]:
        """Block until a call may start under the cap and the rate; give the slot back on exit."""

    def report_busy(self) -> None:
        """The upstream answered 1302/1303/429: lower the fleet's in-flight target."""

    def capacity(self) -> Capacity | None:
        """Calls held and the in-flight limit, as last seen (no extra round trip); ``None``
        before the first call."""

    def close(self) -> None:
        """Give back what the limiter holds (a Redis client it made)."""


@dataclass(frozen=True)
class Capacity:
    """Fleet-wide calls in flight and the in-flight limit (the cap, or the lowered target)."""

    held: int
    limit: int

    @property
    def free(self) -> int:
        return self.limit - self.held


@dataclass
class LimiterStats:
    """What one limiter has seen in this process (for logs, benchmarks and tests)."""

    acquired: int = 0
    waited_s: float = 0.0
    max_wait_s: float = 0.0
    busy_reports: int = 0

    def record_wait(self, waited_s: float) -> None:
        self.acquired += 1
        self.waited_s += waited_s
        self.max_wait_s = max(self.max_wait_s, waited_s)


def unlimited() -> LocalLimiter:
    """A limiter that never makes a call wait (pipelines built without one, in tests)."""
    return LocalLimiter(max_concurrency=UNLIMITED_CONCURRENCY)


def lease_s_from_settings(settings: Settings) -> float:
    """How long a call's fleet-wide slot outlives its worker's last renewal
    (``KLING_SLOT_LEASE_SECONDS``); the worker renews it for as long as the call lasts."""
    return settings.kling_slot_lease_seconds or DEFAULT_SLOT_LEASE_S


@contextmanager
def holding(
    *,
    take: Callable[[], None],
    give_back: Callable[[bool], None],
    record_wait: Callable[[float], None],
) -> Iterator[None]:
    """Take a slot (timing the wait), hold it for the call, give it back saying whether the
    call went well: the part of ``slot()`` both limiters share."""
    started = time.monotonic()
    take()
    waited = time.monotonic() - started
    metrics.observe_limiter_wait(waited)
    record_wait(waited)
    ok = False
    try:
        yield
        ok = True
    except BaseException as exc:
        ok = succeeded(exc)
        raise
    finally:
        give_back(ok)


def raise_if_stopping(stopping: threading.Event | None) -> None:
    """A call not yet started when the worker stops is not made: its job goes back."""
    if stopping is not None and stopping.is_set():
        raise WorkerStopping("worker stopping before the call could take a slot")


def succeeded(exc: BaseException | None) -> bool:
    """Whether a call counts toward recovery: any answer but a retryable failure does."""
    return exc is None or not isinstance(exc, RetryableError)


class LocalLimiter:
    """The same limits within one process (no ``REDIS_URL``); thread-safe."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_rate: float | None = None,
        cool_down_s: float = BUSY_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
        stopping: threading.Event | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.max_rate = max_rate
        self._interval_s = 1 / max_rate if max_rate else 0.0
        self._cool_down_s = cool_down_s
        self._clock = clock
        #: Set on warm shutdown: a call still waiting for a slot is not made.
        self._stopping = stopping
        self._cond = threading.Condition()
        self._in_flight = 0
        self._target = float(max_concurrency)
        self._next_call = 0.0
        self._last_decrease = float("-inf")
        self._calls = threading.local()
        self.stats = LimiterStats()

    def slot(self) -> AbstractContextManager[None]:
        return holding(
            take=self._take,
            give_back=lambda ok: self._give_back(succeeded=ok),
            record_wait=self._record_wait,
        )

    def _record_wait(self, waited_s: float) -> None:
        with self._cond:
            self.stats.record_wait(waited_s)

    def report_busy(self) -> None:
        with self._cond:
            self.stats.busy_reports += 1
            now = self._clock()
            started: float | None = getattr(self._calls, "started", None)
            if started is not None:
                if started <= self._last_decrease:
                    return
            elif now - self._last_decrease < self._cool_down_s:
                return
            self._last_decrease = now
            self._target = max(1.0, min(self._target, max(self._in_flight, 1)) * DECREASE_FACTOR)
            target = self._target
        logger.warning("The upstream is busy: the in-flight target is now %.1f calls.", target)

    def target(self) -> float:
        with self._cond:
            return self._target

    def held(self) -> int:
        with self._cond:
            return self._in_flight

    def capacity(self) -> Capacity:
        """Exact: every holder is in this process."""
        with self._cond:
            limit = max(1, min(self.max_concurrency, int(self._target)))
            return Capacity(held=self._in_flight, limit=limit)

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`RedisLimiter`)."""

    def _take(self) -> None:
        with self._cond:
            while True:
                raise_if_stopping(self._stopping)
                limit = max(1, min(self.max_concurrency, int(self._target)))
                if self._in_flight < limit:
                    now = self._clock()
                    wait_s = self._next_call - now
                    if wait_s <= 0:
                        self._in_flight += 1
                        self._calls.started = now
                        if self._interval_s:
                            self._next_call = max(self._next_call, now) + self._interval_s
                        if self._in_flight < limit:
                            # Room for one more: pass the turn on (it may wait for the rate).
                            self._cond.notify()
                        return
                    self._cond.wait(min(wait_s, STOP_CHECK_S) if self._stopping else wait_s)
                else:
                    self._cond.wait(STOP_CHECK_S if self._stopping else None)

    def _give_back(self, *, succeeded: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            if succeeded and self._target < self.max_concurrency:
                self._target = min(
                    float(self.max_concurrency), self._target + 1 / max(1.0, self._target)
                )
            # One waiter is enough: a slot freed is one call allowed.
            self._cond.notify()
