"""A circuit breaker per account, for failures that say "every call on this account will fail".

Auth failures (1000–1004 after re-signing, 1103, gateway 401/403) and account blocks (1100–1102,
1304) are about an account, not the job. After one, calls on that account pause for ``open_s``;
the other accounts go on. A job that can only go to a paused account (pinned to it, or every
account paused) fails at once with the same error type, and is not remembered, so it can be
resubmitted once the account is fixed: failing it rather than holding it back keeps the
contract's promise of one prompt terminal result per job.

When the pause is over the account is *probed*: one call, fleet-wide, may try it
(:meth:`BreakerState.take_probe`); the others still treat it as paused until that call answers.
An answer that is not an account failure closes the breaker (:meth:`~BreakerState.probe_passed`);
another account failure opens it again for ``open_s``; a call that said nothing either way (a
timeout, a 5xx, no call at all) hands the probe to the next caller
(:meth:`~BreakerState.probe_abandoned`). A blocked account is called about once per
``open_s``, not hammered.

The pause holds within one round of calls: :meth:`~BreakerState.view` (which may trust a
closed state read a moment ago) only chooses the account; a call that has waited for its
fleet-wide slot asks again with :meth:`~BreakerState.view_now`, uncached, before it goes out, and
a tripping call opens the breaker before it gives its slot back. So whoever takes that slot sees
the pause, and after an account's first failure only the calls already in flight reach it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import redis

from contract import keys
from worker.errors import AccountBlocked, AuthFailed, JobFailure

logger = logging.getLogger(__name__)

#: How long a worker process trusts the breaker state it read from Redis.
CLOSED_RECHECK_S = 0.5
#: Errors that open the breaker.
TRIPPING_ERRORS: tuple[type[JobFailure], ...] = (AuthFailed, AccountBlocked)
#: How long an account stays "to be probed" after its pause, if no call comes to probe it.
PROBE_DUE_TTL_S = 24 * 3600
#: Longest a probe call holds the probe by default (a killed prober's probe comes back after it).
PROBE_LEASE_S = 70.0


@dataclass(frozen=True)
class BreakerView:
    """What a caller may do now: ``error`` is why calls are paused (``None``: closed);
    ``probe_due``: the pause is over and one probe call may test the account."""

    error: JobFailure | None = None
    probe_due: bool = False


CLOSED = BreakerView()


class BreakerState(Protocol):
    def view(self) -> BreakerView:
        """Whether calls may go: closed, paused (with the error), or paused with a probe due;
        a closed state may be a moment old (for choosing an account)."""

    def view_now(self) -> BreakerView:
        """The same, never from a cache: the last check before a call goes out."""

    def take_probe(self) -> bool:
        """Become the one probe call of a paused account whose pause is over."""

    def trip(self, error: JobFailure) -> None:
        """Pause calls for the configured time because of ``error``."""

    def probe_passed(self) -> None:
        """The probe call got an answer that is not an account failure: close the breaker."""

    def probe_abandoned(self) -> None:
        """The probe call said nothing about the account: let the next caller probe."""


def breaker_error(
    error_type: str, message: str, api_code: int | None, account: str | None = None
) -> JobFailure:
    cls = AccountBlocked if error_type == AccountBlocked.error_type else AuthFailed
    on = f" on account {account!r}" if account else ""
    return cls(f"calls{on} paused after an earlier failure: {message}", api_code=api_code)


def _state(error: JobFailure) -> str:
    return json.dumps(
        {"type": error.error_type, "message": error.message, "api_code": error.api_code}
    )


# KEYS: pause, probe_due, probe. ARGV: holder, lease_ms. 1: the caller may call (closed, or it
# now holds the probe); 0: still paused, or another caller probes.
_TAKE_PROBE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 1
end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return 1
end
return 0
"""

# KEYS: probe. ARGV: holder. Gives the probe back only if this holder still has it.
_GIVE_BACK_PROBE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisBreaker:
    """One account's breaker, shared by the fleet through Redis under ``key`` (the pause),
    ``key:probe_due`` and ``key:probe``.

    A closed state read from Redis is trusted for ``recheck_s``, so the common case costs one
    Redis call per process every so often rather than one per job; a trip elsewhere reaches
    this process within that time.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        open_s: float,
        key: str = keys.BREAKER,
        account: str | None = None,
        recheck_s: float = CLOSED_RECHECK_S,
        probe_lease_s: float = PROBE_LEASE_S,
    ) -> None:
        self._redis = client
        self._open_ms = max(1, round(open_s * 1000))
        self._key = key
        self._due_key = f"{key}:probe_due"
        self._probe_key = f"{key}:probe"
        self._account = account
        self._recheck_s = recheck_s
        self._probe_lease_ms = max(1, round(probe_lease_s * 1000))
        self._take_probe = client.register_script(_TAKE_PROBE)
        self._give_back = client.register_script(_GIVE_BACK_PROBE)
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._cached_until = 0.0

    def view(self) -> BreakerView:
        with self._lock:
            if time.monotonic() < self._cached_until:
                return CLOSED
        return self.view_now()

    def view_now(self) -> BreakerView:
        try:
            paused, due = self._redis.mget(self._key, self._due_key)
        except redis.RedisError as exc:
            # Fail open: a store outage must not stop calls that would succeed.
            logger.warning("Circuit breaker state unreadable (%s); treating it as closed.", exc)
            return CLOSED
        if paused is not None:
            seen = BreakerView(self._error(paused))
        elif due is not None:
            seen = BreakerView(self._error(due), probe_due=True)
        else:
            seen = CLOSED
        # Only "closed" is trusted for a while: a pause (or its end, when an operator clears
        # it) shows at once, at one read per call while the account is paused; a pause seen
        # here shows at once to this process's other threads too.
        with self._lock:
            self._cached_until = time.monotonic() + self._recheck_s if seen is CLOSED else 0.0
        return seen

    def _error(self, raw: bytes | str) -> JobFailure:
        state = json.loads(raw)
        return breaker_error(state["type"], state["message"], state["api_code"], self._account)

    def take_probe(self) -> bool:
        try:
            taken = self._take_probe(
                keys=[self._key, self._due_key, self._probe_key],
                args=[self._holder, self._probe_lease_ms],
            )
        except redis.RedisError as exc:
            logger.warning("Circuit breaker probe not coordinated (%s); calling anyway.", exc)
            return True
        return bool(taken)

    def trip(self, error: JobFailure) -> None:
        state = _state(error)
        self._forget()
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._key, state, px=self._open_ms)
                pipe.set(self._due_key, state, px=self._open_ms + PROBE_DUE_TTL_S * 1000)
                pipe.delete(self._probe_key)
                pipe.execute()
        except redis.RedisError as exc:
            logger.warning("Circuit breaker not opened fleet-wide (%s).", exc)

    def probe_passed(self) -> None:
        self._forget()
        try:
            self._redis.delete(self._due_key, self._probe_key)
        except redis.RedisError as exc:
            logger.warning("Circuit breaker not closed fleet-wide (%s).", exc)

    def probe_abandoned(self) -> None:
        self._forget()
        try:
            self._give_back(keys=[self._probe_key], args=[self._holder])
        except redis.RedisError as exc:
            # The probe expires by itself.
            logger.warning("Circuit breaker probe not given back (%s).", exc)

    def _forget(self) -> None:
        with self._lock:
            self._cached_until = 0.0


class LocalBreaker:
    """One account's breaker within this process (no ``REDIS_URL``); thread-safe."""

    def __init__(
        self,
        *,
        open_s: float,
        account: str | None = None,
        probe_lease_s: float = PROBE_LEASE_S,
    ) -> None:
        self._open_s = open_s
        self._account = account
        self._probe_lease_s = probe_lease_s
        self._lock = threading.Lock()
        self._error: JobFailure | None = None
        self._until = 0.0
        self._probe_until = 0.0

    def view(self) -> BreakerView:
        with self._lock:
            error, until = self._error, self._until
        if error is None:
            return CLOSED
        paused = breaker_error(error.error_type, error.message, error.api_code, self._account)
        return BreakerView(paused, probe_due=time.monotonic() >= until)

    def view_now(self) -> BreakerView:
        """:meth:`view` is never cached here."""
        return self.view()

    def take_probe(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._error is None:
                return True
            if now < self._until or now < self._probe_until:
                return False
            self._probe_until = now + self._probe_lease_s
            return True

    def trip(self, error: JobFailure) -> None:
        with self._lock:
            self._until = time.monotonic() + self._open_s
            self._error = error
            self._probe_until = 0.0

    def probe_passed(self) -> None:
        with self._lock:
            self._error = None
            self._probe_until = 0.0

    def probe_abandoned(self) -> None:
        with self._lock:
            self._probe_until = 0.0
