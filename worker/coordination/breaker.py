"""A fleet-wide circuit breaker for failures that say "every call will fail now".

Auth failures (1000–1004 after re-signing, 1103, gateway 401/403) and account blocks (1100–1102,
1304) are about our account, not the job. After one, calls pause for ``open_s``: jobs that arrive
meanwhile fail at once with the same error type (and are not remembered, so they can be
resubmitted once the account is fixed). Failing them rather than holding them back keeps the
contract's promise of one prompt terminal result per job, and keeps the queue from silting up
behind an outage only a person can fix.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Protocol

import redis

from contract import keys
from worker.errors import AccountBlocked, AuthFailed, JobFailure

logger = logging.getLogger(__name__)

#: How long a worker process trusts a closed breaker it read from Redis.
CLOSED_RECHECK_S = 0.5
#: Errors that open the breaker.
TRIPPING_ERRORS: tuple[type[JobFailure], ...] = (AuthFailed, AccountBlocked)


class BreakerState(Protocol):
    def open_error(self) -> JobFailure | None:
        """The error to fail calls with while the breaker is open, else ``None``."""

    def trip(self, error: JobFailure) -> None:
        """Open the breaker for its configured time because of ``error``."""


def breaker_error(error_type: str, message: str, api_code: int | None) -> JobFailure:
    cls = AccountBlocked if error_type == AccountBlocked.error_type else AuthFailed
    return cls(f"calls paused after an earlier failure: {message}", api_code=api_code)


class RedisBreaker:
    """The breaker shared by the fleet. A closed state read from Redis is trusted for
    ``recheck_s``, so the common case costs one Redis call per process every so often rather
    than one per job; a trip elsewhere reaches this process within that time."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        open_s: float,
        key: str = keys.BREAKER,
        recheck_s: float = CLOSED_RECHECK_S,
    ) -> None:
        self._redis = client
        self._open_s = open_s
        self._key = key
        self._recheck_s = recheck_s
        self._closed_until = 0.0

    def open_error(self) -> JobFailure | None:
        if time.monotonic() < self._closed_until:
            return None
        error = self._read()
        if error is None:
            self._closed_until = time.monotonic() + self._recheck_s
        return error

    def _read(self) -> JobFailure | None:
        try:
            raw = self._redis.get(self._key)
        except redis.RedisError as exc:
            # Fail open: a store outage must not stop calls that would succeed.
            logger.warning("Circuit breaker state unreadable (%s); treating it as closed.", exc)
            return None
        if raw is None:
            return None
        state = json.loads(raw)
        return breaker_error(state["type"], state["message"], state["api_code"])

    def trip(self, error: JobFailure) -> None:
        state = {"type": error.error_type, "message": error.message, "api_code": error.api_code}
        self._closed_until = 0.0
        try:
            self._redis.set(self._key, json.dumps(state), px=int(self._open_s * 1000))
        except redis.RedisError as exc:
            logger.warning("Circuit breaker not opened fleet-wide (%s).", exc)


class LocalBreaker:
    def __init__(self, *, open_s: float) -> None:
        self._open_s = open_s
        self._lock = threading.Lock()
        self._until = 0.0
        self._error: JobFailure | None = None

    def open_error(self) -> JobFailure | None:
        with self._lock:
            if self._error is None or time.monotonic() >= self._until:
                return None
            error = self._error
        return breaker_error(error.error_type, error.message, error.api_code)

    def trip(self, error: JobFailure) -> None:
        with self._lock:
            self._until = time.monotonic() + self._open_s
            self._error = error
