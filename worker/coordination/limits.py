"""Fleet-wide limits on upstream calls: a concurrency cap, a rate, and adaptive back-off.

Every worker thread wraps its one API call in ``with limiter.slot():``. The slot is granted only
while fewer than the fleet's in-flight *target* calls are running and the rate allows another
call. The target starts at ``KLING_MAX_CONCURRENCY``. The slot learns from how its call ended: a
call that raised :class:`~worker.errors.UpstreamBusy` (1302/1303/429) is a *busy* answer.

The back-off judges *windows* of answers. A window holds a round of them (as many as calls were
in flight, at least :data:`MIN_WINDOW_ANSWERS`), of calls started since it opened, so the calls
in flight when the fleet slowed down say nothing new. When more than :data:`BUSY_TOLERANCE` of a
window's answers were busy, the fleet keeps the share that got through, and at least
:data:`DEEPEST_CUT`: the target becomes ``(1 - share) ×`` the calls in flight. Successes grow a
lowered target by about one slot per round (additive increase), back to the cap.

A refused call keeps its slot for :data:`BUSY_HOLD_S` after the answer (Kling asks for at least
a second before trying again). Else a refusal, which comes back at once, frees its slot at once
for the next job, which is refused in turn: one slot over the account's limit would be refused
over and over, and make most of the answers.

A share, not each busy answer, because an account is shared: Kling answers 1303 now and then at
any concurrency when other users of the account take its parallel slots. Cutting the target to
70 % on each such answer (plain AIMD) held a fleet with 5 % random 1303s near ten calls in
flight; a share under the tolerance costs nothing, and over the account's real limit the share
is the excess, so the target falls to about the limit within a window or two.

Two implementations share that contract:

- :class:`~worker.coordination.limits_redis.RedisLimiter` (``REDIS_URL`` set) holds across
  every process and node using the same Redis (its module says how).
- :class:`LocalLimiter` (no ``REDIS_URL``) holds within one process, with a condition variable.

Waiting never spins: in a process only one thread at a time asks Redis, sleeping between tries
for the rate's exact wait or a short, growing, jittered pause, and is woken early when a thread
of the same process gives a slot back.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol, TypeVar

from contract.settings import Settings
from worker.errors import RetryableError, UpstreamBusy, WorkerStopping
from worker.ops import metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Share of busy answers in a window the fleet takes in its stride (a shared account's random
#: refusals) before it lowers its target.
BUSY_TOLERANCE = 0.1
#: Fewest answers a window judges: fewer say too little about a share of 10 %.
MIN_WINDOW_ANSWERS = 20
#: The least of the calls in flight one window keeps: a deeper cut takes a few windows, each a
#: fresh sample.
DEEPEST_CUT = 0.5
#: How long a refused call's slot stays taken after the answer.
BUSY_HOLD_S = 1.0
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
    """What the pipeline needs: a slot around each upstream call, learning from how it ended."""

    def slot(self) -> AbstractContextManager[None]:
        """Block until a call may start under the cap and the rate; give the slot back on exit,
        with the call's :class:`Answer` (the exception it raised, if any)."""

    def capacity(self) -> Capacity | None:
        """Calls held and the in-flight limit, as last seen (no extra round trip); ``None``
        before the first call."""

    def close(self) -> None:
        """Give back what the limiter holds (a Redis client it made)."""


class CallNotMade(Exception):
    """Raised inside a slot whose call is not made after all (its account was paused while it
    waited): the slot goes back at once, and is no answer to the back-off."""


class Answer(Enum):
    """How a call ended, as the back-off sees it."""

    #: Any answer but a retryable failure: the call counts toward recovery.
    OK = "ok"
    #: 1302/1303/429: the account is full.
    BUSY = "busy"
    #: Another retryable failure (5xx, a timeout): an answer, but no sign of room.
    FAILED = "failed"
    #: No call was made (:class:`CallNotMade`): the slot goes back, nothing is learned.
    UNUSED = "unused"

    @classmethod
    def of(cls, exc: BaseException | None) -> Answer:
        if isinstance(exc, CallNotMade):
            return cls.UNUSED
        if isinstance(exc, UpstreamBusy):
            return cls.BUSY
        if exc is None or not isinstance(exc, RetryableError):
            return cls.OK
        return cls.FAILED


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
    busy_answers: int = 0

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
    take: Callable[[], T],
    give_back: Callable[[T, Answer], None],
    record_wait: Callable[[float], None],
) -> Iterator[None]:
    """Take a slot (timing the wait), hold it for the call, give it back with the call's answer
    and what ``take`` returned (when the call started): the part of ``slot()`` both limiters
    share."""
    started = time.monotonic()
    stamp = take()
    waited = time.monotonic() - started
    metrics.observe_limiter_wait(waited)
    record_wait(waited)
    answer = Answer.OK
    try:
        yield
    except BaseException as exc:
        answer = Answer.of(exc)
        raise
    finally:
        give_back(stamp, answer)


def raise_if_stopping(stopping: threading.Event | None) -> None:
    """A call not yet started when the worker stops is not made: its job goes back."""
    if stopping is not None and stopping.is_set():
        raise WorkerStopping("worker stopping before the call could take a slot")


def grown(target: float, cap: int) -> float:
    """A lowered target after one success: about one slot more per round of calls."""
    return min(float(cap), target + 1 / max(1.0, target))


class Lowered(NamedTuple):
    """A back-off: the new target, and the busy share of the window that caused it."""

    target: float
    busy_share: float


@dataclass
class BusyWindow:
    """The answers the back-off judges (see the module doc): of calls started since ``opened``,
    how many, how many busy, and the most calls in flight meanwhile. The local limiter's; the
    Redis one keeps the same numbers in a hash, in a Lua script that mirrors :meth:`answered`."""

    opened: float = float("-inf")
    answers: int = 0
    busy: int = 0
    peak: int = 0

    def answered(
        self, started: float, answer: Answer, *, held: int, target: float, now: float
    ) -> Lowered | None:
        """Count the answer of a call that started at ``started``, ``held`` calls in flight
        (this one included). When that closes the window, open the next one; if over
        :data:`BUSY_TOLERANCE` of its answers were busy, keep the share of the calls in flight
        (at most ``target``) that got through, and at least :data:`DEEPEST_CUT` of them."""
        if started < self.opened:
            return None
        self.answers += 1
        self.busy += answer is Answer.BUSY
        self.peak = max(self.peak, held)
        if self.answers < max(MIN_WINDOW_ANSWERS, self.peak):
            return None
        share, peak = self.busy / self.answers, self.peak
        self.opened, self.answers, self.busy, self.peak = now, 0, 0, 0
        if share <= BUSY_TOLERANCE:
            return None
        lowered = max(1.0, min(target, peak) * max(1 - share, DEEPEST_CUT))
        return Lowered(lowered, share) if lowered < target else None


class LocalLimiter:
    """The same limits within one process (no ``REDIS_URL``); thread-safe."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        stopping: threading.Event | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.max_rate = max_rate
        self._interval_s = 1 / max_rate if max_rate else 0.0
        self._clock = clock
        #: Set on warm shutdown: a call still waiting for a slot is not made.
        self._stopping = stopping
        self._cond = threading.Condition()
        self._in_flight = 0
        #: When the slots of refused calls come free (a heap; they count in ``_in_flight``).
        self._refused_until: list[float] = []
        self._target = float(max_concurrency)
        self._next_call = 0.0
        self._window = BusyWindow()
        self.stats = LimiterStats()

    def slot(self) -> AbstractContextManager[None]:
        return holding(take=self._take, give_back=self._give_back, record_wait=self._record_wait)

    def _record_wait(self, waited_s: float) -> None:
        with self._cond:
            self.stats.record_wait(waited_s)

    def target(self) -> float:
        with self._cond:
            return self._target

    def held(self) -> int:
        with self._cond:
            self._free_refused(self._clock())
            return self._in_flight

    def capacity(self) -> Capacity:
        """Exact: every holder is in this process."""
        with self._cond:
            self._free_refused(self._clock())
            limit = max(1, min(self.max_concurrency, int(self._target)))
            return Capacity(held=self._in_flight, limit=limit)

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`RedisLimiter`)."""

    def _take(self) -> float:
        with self._cond:
            while True:
                raise_if_stopping(self._stopping)
                now = self._clock()
                self._free_refused(now)
                limit = max(1, min(self.max_concurrency, int(self._target)))
                wait_s: float | None
                if self._in_flight < limit:
                    wait_s = self._next_call - now
                    if wait_s <= 0:
                        self._in_flight += 1
                        if self._interval_s:
                            self._next_call = max(self._next_call, now) + self._interval_s
                        if self._in_flight < limit:
                            # Room for one more: pass the turn on (it may wait for the rate).
                            self._cond.notify()
                        return now
                else:
                    # Full: until a slot is given back, or a refused call's slot comes free.
                    wait_s = self._refused_until[0] - now if self._refused_until else None
                if self._stopping is not None:
                    wait_s = STOP_CHECK_S if wait_s is None else min(wait_s, STOP_CHECK_S)
                self._cond.wait(wait_s)

    def _free_refused(self, now: float) -> None:
        while self._refused_until and self._refused_until[0] <= now:
            heapq.heappop(self._refused_until)
            self._in_flight -= 1

    def _give_back(self, started: float, answer: Answer) -> None:
        with self._cond:
            now = self._clock()
            held = self._in_flight
            if answer is Answer.UNUSED:
                self._in_flight -= 1
                self._cond.notify()
                return
            if answer is Answer.BUSY:
                self.stats.busy_answers += 1
                heapq.heappush(self._refused_until, now + BUSY_HOLD_S)
            else:
                self._in_flight -= 1
                if answer is Answer.OK and self._target < self.max_concurrency:
                    self._target = grown(self._target, self.max_concurrency)
            backed_off = self._window.answered(
                started, answer, held=held, target=self._target, now=now
            )
            if backed_off is not None:
                self._target = backed_off.target
            # One waiter is enough: a slot freed is one call allowed.
            self._cond.notify()
        if backed_off is not None:
            logger.warning(
                "The upstream is busy (%.0f %% of a round's answers): the in-flight target is "
                "now %.1f calls.", backed_off.busy_share * 100, backed_off.target,
            )  # fmt: skip
