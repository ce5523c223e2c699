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

- :class:`RedisLimiter` (``REDIS_URL`` set) holds across every process and node using the same
  Redis. Each call holds a *lease*: a member of a sorted set scored by its expiry, taken and
  given back by Lua scripts that first drop expired members, so a worker killed mid-call gives
  its slots back by itself after ``lease_s``. Times come from the Redis server's clock, never a
  node's. The rate is a GCRA-style "next allowed call" time in the same script.
- :class:`LocalLimiter` (no ``REDIS_URL``) holds within one process, with a condition variable.

Waiting never spins: in a process only one thread at a time asks Redis, sleeping between tries
for the rate's exact wait or a short, growing, jittered pause, and is woken early when a thread
of the same process gives a slot back.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis

from producers.settings import Settings
from worker import metrics
from worker.errors import RetryableError

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
#: Extra lease beyond the longest a call may take (two timeouts: a JWT re-sign sends it twice).
LEASE_MARGIN_S = 10.0
#: The cap of :func:`unlimited`: more calls than any process runs at once.
UNLIMITED_CONCURRENCY = 1_000_000
#: Prefix of the Redis keys the limiter uses.
DEFAULT_KEY_PREFIX = "kling:limits"


class CallLimiter(Protocol):
    """What the pipeline needs: a slot around each upstream call, and a way to say "busy"."""

    def slot(self) -> AbstractContextManager[None]:
        """Block until a call may start under the cap and the rate; give the slot back on exit."""

    def report_busy(self) -> None:
        """The upstream answered 1302/1303/429: lower the fleet's in-flight target."""


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


def default_lease_s(timeout_s: float) -> float:
    """A lease longer than any one call: two timeouts (JWT re-sign) and a margin."""
    return 2 * timeout_s + LEASE_MARGIN_S


def limiter_from_settings(
    settings: Settings, client: redis.Redis | None = None
) -> RedisLimiter | LocalLimiter:
    """Redis-backed when ``REDIS_URL`` is set (fleet-wide), in-process otherwise.

    ``client`` is the process's shared Redis client, if it has one (else one is made).
    """
    lease_s = settings.kling_slot_lease_seconds or default_lease_s(settings.kling_timeout_seconds)
    if settings.redis_url:
        return RedisLimiter(
            client if client is not None else redis.Redis.from_url(settings.redis_url),
            max_concurrency=settings.kling_max_concurrency,
            max_rate=settings.kling_max_rate,
            lease_s=lease_s,
            owns_client=client is None,
        )
    return LocalLimiter(
        max_concurrency=settings.kling_max_concurrency, max_rate=settings.kling_max_rate
    )


@contextmanager
def _holding(
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
        ok = _succeeded(exc)
        raise
    finally:
        give_back(ok)


def _succeeded(exc: BaseException | None) -> bool:
    """Whether a call counts toward recovery: any answer but a retryable failure does."""
    return exc is None or not isinstance(exc, RetryableError)


# KEYS: slots, next_call, target. ARGV: holder, lease_us, cap, interval_us.
# Returns {granted (0/1), rate wait in µs, held after the call, in-flight limit, now in µs}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease_us = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local interval_us = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local target = tonumber(redis.call('GET', KEYS[3]) or cap)
local limit = math.max(1, math.min(cap, math.floor(target)))
local held = redis.call('ZCARD', KEYS[1])
if held >= limit then
  return {0, 0, held, limit, now}
end
if interval_us > 0 then
  local next_call = tonumber(redis.call('GET', KEYS[2]) or 0)
  if next_call > now then
    return {0, next_call - now, held, limit, now}
  end
  redis.call('SET', KEYS[2], now + interval_us, 'PX', math.ceil(interval_us / 1000) + 1000)
end
redis.call('ZADD', KEYS[1], now + lease_us, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease_us / 1000) + 1000)
return {1, 0, held + 1, limit, now}
"""

# KEYS: slots, target. ARGV: holder, succeeded (0/1), cap, memory_ms.
# Gives the lease back; a success grows a lowered target by 1/target (one slot per round).
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  local target = tonumber(redis.call('GET', KEYS[2]))
  if target then
    local cap = tonumber(ARGV[3])
    target = target + 1 / math.max(1, target)
    if target >= cap then
      redis.call('DEL', KEYS[2])
    else
      redis.call('SET', KEYS[2], tostring(target), 'PX', tonumber(ARGV[4]))
    end
  end
end
return 1
"""

# KEYS: slots, target, last_decrease. ARGV: cap, factor, call_started_us (0: unknown),
# cool_down_us, memory_ms. Lowers the target to factor × what is really in flight (or the target,
# if less), unless the busy call started before the last decrease (or, with no call known, the
# last decrease is more recent than the cool-down). Returns the target in thousandths, or -1.
_REPORT_BUSY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3]) or 0)
local started = tonumber(ARGV[3])
if started > 0 then
  if started <= last then
    return -1
  end
elseif now - last < tonumber(ARGV[4]) then
  return -1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[1])
local target = math.min(cap, tonumber(redis.call('GET', KEYS[2]) or cap))
local held = redis.call('ZCARD', KEYS[1])
local lowered = math.max(1, math.min(target, math.max(held, 1)) * tonumber(ARGV[2]))
redis.call('SET', KEYS[2], tostring(lowered), 'PX', tonumber(ARGV[5]))
redis.call('SET', KEYS[3], tostring(now), 'PX', tonumber(ARGV[5]))
return math.floor(lowered * 1000)
"""


class RedisLimiter:
    """Fleet-wide limits in Redis; thread-safe, one per worker process (see the module doc)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_concurrency: int,
        max_rate: float | None = None,
        lease_s: float,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        cool_down_s: float = BUSY_COOL_DOWN_S,
        owns_client: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._owns_client = owns_client
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self._redis = client
        self.max_concurrency = max_concurrency
        self.max_rate = max_rate
        self.lease_s = lease_s
        self._interval_us = round(1_000_000 / max_rate) if max_rate else 0
        self._cool_down_us = round(cool_down_s * 1_000_000)
        self._slots_key = f"{key_prefix}:slots"
        self._next_call_key = f"{key_prefix}:next_call"
        self._target_key = f"{key_prefix}:target"
        self._last_decrease_key = f"{key_prefix}:last_decrease"
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._report_busy = client.register_script(_REPORT_BUSY)
        self._holder_prefix = f"{socket.gethostname()}:{os.getpid()}:"
        # One thread of this process asks Redis at a time; the others queue on this lock.
        self._turn = threading.Lock()
        self._freed = threading.Event()
        # When this thread's latest call started (Redis clock, µs): ties a busy report to it.
        self._calls = threading.local()
        self._stats_lock = threading.Lock()
        self.stats = LimiterStats()

    def slot(self) -> AbstractContextManager[None]:
        holder = self._holder_prefix + uuid.uuid4().hex
        return _holding(
            take=lambda: self._take(holder),
            give_back=lambda ok: self._give_back(holder, succeeded=ok),
            record_wait=self._record_wait,
        )

    def _record_wait(self, waited_s: float) -> None:
        with self._stats_lock:
            self.stats.record_wait(waited_s)

    def report_busy(self) -> None:
        with self._stats_lock:
            self.stats.busy_reports += 1
        lowered = self._report_busy(
            keys=[self._slots_key, self._target_key, self._last_decrease_key],
            args=[
                self.max_concurrency,
                DECREASE_FACTOR,
                getattr(self._calls, "started_us", 0),
                self._cool_down_us,
                round(TARGET_MEMORY_S * 1000),
            ],
        )
        if int(lowered) >= 0:
            logger.warning(
                "The upstream is busy: the fleet's in-flight target is now %.1f calls.",
                int(lowered) / 1000,
            )

    def target(self) -> float:
        """The fleet's current in-flight target (the cap unless lowered)."""
        raw = self._redis.get(self._target_key)
        return min(float(self.max_concurrency), float(raw)) if raw else self.max_concurrency

    def held(self) -> int:
        """Leases held now across the fleet, expired ones not counted."""
        now_s, now_us = self._redis.time()
        now = now_s * 1_000_000 + now_us
        return int(self._redis.zcount(self._slots_key, f"({now}", "+inf"))

    def reset(self) -> None:
        """Forget every lease and the lowered target (tests and benchmarks)."""
        self._redis.delete(
            self._slots_key, self._next_call_key, self._target_key, self._last_decrease_key
        )

    def close(self) -> None:
        """Close the Redis client, if this limiter made it."""
        if self._owns_client:
            self._redis.close()

    def _take(self, holder: str) -> None:
        keys = [self._slots_key, self._next_call_key, self._target_key]
        args: list[str | int] = [
            holder,
            round(self.lease_s * 1_000_000),
            self.max_concurrency,
            self._interval_us,
        ]
        with self._turn:
            pause = MIN_POLL_S
            while True:
                self._freed.clear()
                granted, rate_wait_us, _, _, now_us = self._acquire(keys=keys, args=args)
                if granted:
                    self._calls.started_us = int(now_us)
                    return
                if rate_wait_us:
                    # The rate's wait is exact; a little jitter spreads the nodes apart.
                    time.sleep(int(rate_wait_us) / 1_000_000 + random.uniform(0, MIN_POLL_S))
                    continue
                # Full: try again when this process frees a slot, or after a growing pause
                # (another process may have freed one).
                self._freed.wait(random.uniform(pause / 2, pause))
                pause = min(MAX_POLL_S, pause * 2)

    def _give_back(self, holder: str, *, succeeded: bool) -> None:
        try:
            self._release(
                keys=[self._slots_key, self._target_key],
                args=[holder, int(succeeded), self.max_concurrency, round(TARGET_MEMORY_S * 1000)],
            )
        except redis.RedisError:
            # The lease expires by itself; the call's outcome matters more than this slot.
            logger.exception("Could not give a call slot back to Redis; it expires by itself.")
        self._freed.set()


class LocalLimiter:
    """The same limits within one process (no ``REDIS_URL``); thread-safe."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_rate: float | None = None,
        cool_down_s: float = BUSY_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.max_rate = max_rate
        self._interval_s = 1 / max_rate if max_rate else 0.0
        self._cool_down_s = cool_down_s
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._target = float(max_concurrency)
        self._next_call = 0.0
        self._last_decrease = float("-inf")
        self._calls = threading.local()
        self.stats = LimiterStats()

    def slot(self) -> AbstractContextManager[None]:
        return _holding(
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

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`RedisLimiter`)."""

    def _take(self) -> None:
        with self._cond:
            while True:
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
                    self._cond.wait(wait_s)
                else:
                    self._cond.wait()

    def _give_back(self, *, succeeded: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            if succeeded and self._target < self.max_concurrency:
                self._target = min(
                    float(self.max_concurrency), self._target + 1 / max(1.0, self._target)
                )
            # One waiter is enough: a slot freed is one call allowed.
            self._cond.notify()
