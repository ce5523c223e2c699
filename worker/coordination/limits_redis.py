"""The fleet-wide call limits of :mod:`worker.coordination.limits`, held in Redis.

Each call holds a *lease*: a member of a sorted set scored by its expiry, taken and given back by
Lua scripts that first drop expired members. With a ``renewer`` (every worker process has one)
the lease is short and renewed while the call lasts (:mod:`worker.coordination.renewal`), so a
worker killed mid-call gives its slots back by itself within ``lease_s``, and a live worker's
slow call never loses its slot; without one, ``lease_s`` is the longest a call may hold it.
With ``commands`` a slot goes back off the call's path, pipelined with other jobs' commands
(:mod:`worker.coordination.pipelining`). Times come from the Redis server's clock, never a
node's.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from contextlib import AbstractContextManager
from typing import Any

import redis

from contract import keys
from worker.coordination.limits import (
    BUSY_HOLD_S,
    BUSY_TOLERANCE,
    DEEPEST_CUT,
    MAX_POLL_S,
    MIN_POLL_S,
    MIN_WINDOW_ANSWERS,
    STOP_CHECK_S,
    TARGET_MEMORY_S,
    Answer,
    Capacity,
    LimiterStats,
    holding,
    raise_if_stopping,
)
from worker.coordination.pipelining import PipelinedCommands, script_call
from worker.coordination.renewal import HeldLease, LeaseRenewer
from worker.coordination.translation import translated
from worker.coordination.turns import Turnstile

logger = logging.getLogger(__name__)

#: How long a call waits for an unreachable Redis to come back before its job goes back.
STORE_OUTAGE_WAIT_S = 15.0
STORE_OUTAGE_PAUSE_S = 0.5


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

# KEYS: slots, target, busy window. ARGV: holder, answer (ok/busy/failed/unused), cap, memory_ms,
# call_started_us, tolerance, min_window_answers, deepest_cut, busy_hold_us. Gives the lease
# back (a refused call's only after busy_hold_us, unrenewed; an unmade call's and nothing more);
# a success grows a lowered target by 1/target; then the answer goes into the busy window as
# limits.BusyWindow.answered counts it.
# Returns the lowered target and the window's busy share, both in thousandths, or {-1, -1}.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cap = tonumber(ARGV[3])
local memory_ms = tonumber(ARGV[4])
local started = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if ARGV[2] == 'busy' then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[9]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
if ARGV[2] == 'unused' then
  return {-1, -1}
end
local stored = tonumber(redis.call('GET', KEYS[2]))
local target = stored or cap
if ARGV[2] == 'ok' and stored then
  target = math.min(cap, target + 1 / math.max(1, target))
  if target >= cap then
    redis.call('DEL', KEYS[2])
  else
    redis.call('SET', KEYS[2], tostring(target), 'PX', memory_ms)
  end
end
local w = redis.call('HMGET', KEYS[3], 'opened', 'answers', 'busy', 'peak')
if started < tonumber(w[1] or 0) then
  return {-1, -1}
end
local answers = tonumber(w[2] or 0) + 1
local busy = tonumber(w[3] or 0)
if ARGV[2] == 'busy' then
  busy = busy + 1
end
local peak = math.max(held, tonumber(w[4] or 0))
local closes = answers >= math.max(tonumber(ARGV[7]), peak)
if closes then
  redis.call('HSET', KEYS[3], 'opened', string.format('%.0f', now), 'answers', 0, 'busy', 0,
             'peak', 0)
else
  redis.call('HSET', KEYS[3], 'answers', answers, 'busy', busy, 'peak', peak)
end
-- After the write: the window's first answer creates the hash, which must expire too.
redis.call('PEXPIRE', KEYS[3], memory_ms)
if not closes then
  return {-1, -1}
end
local share = busy / answers
if share <= tonumber(ARGV[6]) then
  return {-1, -1}
end
local lowered = math.max(1, math.min(target, peak) * math.max(1 - share, tonumber(ARGV[8])))
if lowered >= target then
  return {-1, -1}
end
redis.call('SET', KEYS[2], tostring(lowered), 'PX', memory_ms)
return {math.floor(lowered * 1000), math.floor(share * 1000)}
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
        key_prefix: str = keys.LIMITS,
        owns_client: bool = True,
        renewer: LeaseRenewer | None = None,
        stopping: threading.Event | None = None,
        commands: PipelinedCommands | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._owns_client = owns_client
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self._redis = client
        self._renewer = renewer
        #: Sends slots back off the call's path (None: each on the caller's thread).
        self._commands = commands
        #: Set on warm shutdown: a call still waiting for a slot is not made.
        self._stopping = stopping
        self.max_concurrency = max_concurrency
        self.max_rate = max_rate
        self.lease_s = lease_s
        self._interval_us = round(1_000_000 / max_rate) if max_rate else 0
        self._slots_key = f"{key_prefix}:slots"
        self._next_call_key = f"{key_prefix}:next_call"
        self._target_key = f"{key_prefix}:target"
        self._window_key = f"{key_prefix}:busy_window"
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._holder_prefix = f"{socket.gethostname()}:{os.getpid()}:"
        # One thread of this process asks Redis at a time; the others wait their turn, in order.
        self._turn = Turnstile()
        self._freed = threading.Event()
        self._stats_lock = threading.Lock()
        self.stats = LimiterStats()
        #: Held and limit from the latest acquire answer (for choosing between accounts).
        self._seen: Capacity | None = None

    def slot(self) -> AbstractContextManager[None]:
        holder = self._holder_prefix + uuid.uuid4().hex
        return holding(
            take=lambda: self._take(holder),
            give_back=lambda started_us, answer: self._give_back(holder, started_us, answer),
            record_wait=self._record_wait,
        )

    def _record_wait(self, waited_s: float) -> None:
        with self._stats_lock:
            self.stats.record_wait(waited_s)

    def capacity(self) -> Capacity | None:
        """Held and limit as the latest acquire answer gave them (no round trip)."""
        return self._seen

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
        self._redis.delete(self._slots_key, self._next_call_key, self._target_key, self._window_key)

    def close(self) -> None:
        """Close the Redis client, if this limiter made it."""
        if self._owns_client:
            self._redis.close()

    def _take(self, holder: str) -> int:
        """Wait for a slot; returns when the call started (Redis clock, µs)."""
        keys = [self._slots_key, self._next_call_key, self._target_key]
        args: list[str | int] = [
            holder,
            round(self.lease_s * 1_000_000),
            self.max_concurrency,
            self._interval_us,
        ]
        with self._turn.turn(), translated():
            pause = MIN_POLL_S
            while True:
                raise_if_stopping(self._stopping)
                self._freed.clear()
                granted, rate_wait_us, held, limit, now_us = self._acquire_waiting_out_outages(
                    keys, args
                )
                self._seen = Capacity(held=int(held), limit=int(limit))
                if granted:
                    if self._renewer is not None:
                        self._renewer.hold(self._lease(holder))
                    return int(now_us)
                if rate_wait_us:
                    # The rate's wait is exact; a little jitter spreads the nodes apart.
                    wait_s = int(rate_wait_us) / 1_000_000 + random.uniform(0, MIN_POLL_S)
                    time.sleep(min(wait_s, STOP_CHECK_S) if self._stopping else wait_s)
                    continue
                # Full: try again when this process frees a slot, or after a growing pause
                # (another process may have freed one).
                self._freed.wait(random.uniform(pause / 2, pause))
                pause = min(MAX_POLL_S, pause * 2)

    def _acquire_waiting_out_outages(self, keys: list[str], args: list[str | int]) -> Any:
        """One try of the acquire script. While Redis is away (a restart), keep trying for up
        to :data:`STORE_OUTAGE_WAIT_S`: a job in the middle of its retries keeps its attempts
        instead of going back to the queue and calling again from the first."""
        deadline = time.monotonic() + STORE_OUTAGE_WAIT_S
        while True:
            try:
                return self._acquire(keys=keys, args=args)
            except redis.ConnectionError:
                if time.monotonic() >= deadline:
                    raise
                raise_if_stopping(self._stopping)
                time.sleep(STORE_OUTAGE_PAUSE_S)

    def _lease(self, holder: str) -> HeldLease:
        return HeldLease(self._slots_key, holder, self.lease_s, in_sorted_set=True)

    def _give_back(self, holder: str, started_us: int, answer: Answer) -> None:
        if self._renewer is not None:
            # Before Redis: a renewal under way must not bring the slot back.
            self._renewer.drop(self._lease(holder))
        if answer is Answer.BUSY:
            with self._stats_lock:
                self.stats.busy_answers += 1
        keys = [self._slots_key, self._target_key, self._window_key]
        args: list[str | int | float] = [
            holder,
            answer.value,
            self.max_concurrency,
            round(TARGET_MEMORY_S * 1000),
            started_us,
            BUSY_TOLERANCE,
            MIN_WINDOW_ANSWERS,
            DEEPEST_CUT,
            round(BUSY_HOLD_S * 1_000_000),
        ]
        if self._commands is not None:
            self._commands.send(script_call(self._release, keys, args), done=self._given_back)
            return
        try:
            reply = self._release(keys=keys, args=args)
        except redis.RedisError as exc:
            reply = exc
        self._given_back(reply)

    def _given_back(self, reply: Any) -> None:
        """The release script's reply: log a lowered target; wake this process's waiters."""
        if isinstance(reply, Exception):
            # The lease expires by itself; the call's outcome matters more than this slot.
            logger.warning("Could not give a call slot back to Redis (%r); it expires.", reply)
        else:
            target, share = reply
            if int(target) >= 0:
                logger.warning(
                    "The upstream is busy (%.0f %% of a round's answers): the fleet's in-flight "
                    "target is now %.1f calls.", int(share) / 10, int(target) / 1000,
                )  # fmt: skip
        self._freed.set()
