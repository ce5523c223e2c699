"""Idempotency by ``job_id``: a recorded outcome is published again instead of calling the API.

The outcome is recorded before the result is published, so a job redelivered after a crash (or
submitted twice) finds it and opens no second session. A short lease keeps two workers that
receive the same ``job_id`` at once from both calling the API; it expires by itself if its holder
dies. With ``REDIS_URL`` the records and leases are shared by the fleet; without it they live in
the worker process (one node, a warning at start-up).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import redis

from contract import keys
from contract.results import Result
from worker.coordination.translation import translated
from worker.errors import StoreUnavailable

logger = logging.getLogger(__name__)

#: How long outcomes are remembered: the contract promises at least 7 days.
OUTCOME_TTL_S = 8 * 24 * 3600
#: How many outcomes a worker without ``REDIS_URL`` remembers (the oldest go first).
LOCAL_MAX_OUTCOMES = 50_000
#: How often a worker waiting on another's lease looks again.
LEASE_POLL_S = 0.2
#: Outcomes that say something lasting about the job itself. Failures caused by our account,
#: our configuration or a passing outage are not remembered, so a resubmission is tried afresh.
REMEMBERED_OUTCOMES = frozenset({None, "video_rejected", "request_rejected"})


def worth_remembering(result: Result) -> bool:
    return (result.error.type if result.error else None) in REMEMBERED_OUTCOMES


class OutcomeStore(Protocol):
    def recorded(self, job_id: str) -> Result | None: ...

    def record(self, result: Result) -> None: ...

    def claim(self, job_id: str, holder: str, lease_s: float) -> Result | bool:
        """In one step: the recorded outcome if there is one, else whether ``holder`` now has
        the lease. A worker that finishes records before it releases, so a lease taken here
        means no outcome is on its way."""

    def release(self, job_id: str, holder: str) -> None: ...


class RedisOutcomeStore:
    """Fleet-wide records and leases in Redis."""

    #: Deletes the lease only if this holder still has it (it may have expired and moved on).
    _RELEASE = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
        "return 0"
    )

    #: The outcome (KEYS[1]) if recorded, else 1 if the lease (KEYS[2]) was free and is now
    #: ARGV[1]'s for ARGV[2] ms, else 0: one round trip instead of three.
    _CLAIM = (
        "local outcome = redis.call('get', KEYS[1]) "
        "if outcome then return outcome end "
        "if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
        "return 0"
    )

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._release = client.register_script(self._RELEASE)
        self._claim = client.register_script(self._CLAIM)

    def recorded(self, job_id: str) -> Result | None:
        with translated():
            raw = self._redis.get(keys.outcome(job_id))
        return None if raw is None else Result.model_validate_json(raw)

    def record(self, result: Result) -> None:
        with translated():
            self._redis.set(keys.outcome(result.job_id), result.to_json(), ex=OUTCOME_TTL_S)

    def claim(self, job_id: str, holder: str, lease_s: float) -> Result | bool:
        with translated():
            answer = self._claim(
                keys=[keys.outcome(job_id), keys.lease(job_id)],
                args=[holder, max(1, int(lease_s * 1000))],
            )
        if isinstance(answer, bytes | str):
            return Result.model_validate_json(answer)
        return bool(answer)

    def release(self, job_id: str, holder: str) -> None:
        with translated():
            self._release(keys=[keys.lease(job_id)], args=[holder])


class LocalOutcomeStore:
    """Records and leases in this process only (no ``REDIS_URL``).

    It keeps the newest ``max_outcomes`` outcomes: a single node's memory, not Redis', bounds
    how much it remembers (about 1-2 KB each).
    """

    def __init__(self, max_outcomes: int = LOCAL_MAX_OUTCOMES) -> None:
        self._lock = threading.Lock()
        self._max_outcomes = max_outcomes
        self._outcomes: OrderedDict[str, tuple[float, Result]] = OrderedDict()
        self._leases: dict[str, tuple[float, str]] = {}

    def recorded(self, job_id: str) -> Result | None:
        with self._lock:
            entry = self._outcomes.get(job_id)
            if entry is None or entry[0] < time.monotonic():
                self._outcomes.pop(job_id, None)
                return None
            return entry[1]

    def record(self, result: Result) -> None:
        with self._lock:
            self._outcomes[result.job_id] = (time.monotonic() + OUTCOME_TTL_S, result)
            self._outcomes.move_to_end(result.job_id)
            while len(self._outcomes) > self._max_outcomes:
                self._outcomes.popitem(last=False)

    def claim(self, job_id: str, holder: str, lease_s: float) -> Result | bool:
        now = time.monotonic()
        with self._lock:
            entry = self._outcomes.get(job_id)
            if entry is not None and entry[0] >= now:
                return entry[1]
            current = self._leases.get(job_id)
            if current is not None and current[0] > now and current[1] != holder:
                return False
            self._leases[job_id] = (now + lease_s, holder)
            return True

    def release(self, job_id: str, holder: str) -> None:
        with self._lock:
            if self._leases.get(job_id, (0.0, ""))[1] == holder:
                del self._leases[job_id]


class JobLease:
    """Waits for the right to run ``job_id``, unless its outcome is recorded meanwhile."""

    def __init__(self, store: OutcomeStore, *, lease_s: float) -> None:
        self._store = store
        self._lease_s = lease_s

    @contextmanager
    def held(self, job_id: str) -> Iterator[Result | None]:
        """Yield the recorded outcome (no lease taken), or ``None`` while holding the lease."""
        holder = uuid.uuid4().hex
        while True:
            claimed = self._store.claim(job_id, holder, self._lease_s)
            if isinstance(claimed, Result):
                yield claimed
                return
            if claimed:
                break
            time.sleep(LEASE_POLL_S)
        try:
            yield None
        finally:
            try:
                self._store.release(job_id, holder)
            except StoreUnavailable as exc:
                # Harmless: the lease expires by itself.
                logger.warning("Lease on job %s not released (%s).", job_id, exc)
