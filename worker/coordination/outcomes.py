"""Idempotency by ``job_id``: a recorded outcome is published again instead of calling the API.

The outcome is recorded before the result is published, so a job redelivered after a crash (or
submitted twice) finds it and opens no second session. A lease keeps two workers that receive
the same ``job_id`` at once from both calling the API. It is short (:data:`JOB_LEASE_S`) and
renewed by its holder's process while the job runs (:mod:`worker.coordination.renewal`), so it
never lapses under a live worker, however long its retries take, and lapses within seconds of
its holder's death. A worker that finds the lease held does not wait for it: the copy goes back
to the broker (:class:`LeaseHeld`), and once the holder has published the job's result, the
copy is acknowledged without a second one (:class:`AnsweredByHolder`). With ``REDIS_URL`` the
records and leases are shared by the fleet; without it they live in the worker process (one
node, a warning at start-up).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis

from contract import keys
from contract.results import Result
from worker.coordination.pipelining import PipelinedCommands, script_call
from worker.coordination.renewal import HeldLease, LeaseRenewer
from worker.coordination.translation import translated
from worker.errors import KlingWorkerError, StoreUnavailable

logger = logging.getLogger(__name__)

#: How long outcomes are remembered: the contract promises at least 7 days.
OUTCOME_TTL_S = 8 * 24 * 3600
#: How many outcomes a worker without ``REDIS_URL`` remembers (the oldest go first).
LOCAL_MAX_OUTCOMES = 50_000
#: How long a job's lease outlives its holder's last renewal: how soon a dead worker's jobs can
#: run again. Renewed every quarter of it, so a live holder survives a few seconds of Redis away.
JOB_LEASE_S = 10.0
#: How long the ``waiting`` / ``answered`` mark of a contended job is kept: longer than a copy
#: can take to come back from the broker (its countdown, then a free thread).
WAITERS_TTL_S = 600.0
#: Outcomes that say something lasting about the job itself. Failures caused by our account,
#: our configuration or a passing outage are not remembered, so a resubmission is tried afresh.
REMEMBERED_OUTCOMES = frozenset({None, "video_rejected", "request_rejected"})

_WAITING, _ANSWERED = "waiting", "answered"


def worth_remembering(result: Result) -> bool:
    return (result.error.type if result.error else None) in REMEMBERED_OUTCOMES


class LeaseHeld(KlingWorkerError):
    """Raised when another live worker holds the job's lease: hand this copy back to the broker
    and try again after ``retry_in_s`` (no call was made)."""

    def __init__(self, job_id: str, *, retry_in_s: float) -> None:
        super().__init__(f"job {job_id} is running on another worker")
        self.retry_in_s = retry_in_s


class AnsweredByHolder(KlingWorkerError):
    """Raised when the worker this copy waited for has published the job's result meanwhile:
    acknowledge the copy, with no call and no second result."""


@dataclass(frozen=True)
class Claim:
    """What a claim on a job found; exactly one of the first three holds, or the lease is held
    by another worker for ``held_for_s`` more (unless renewed)."""

    granted: bool = False
    recorded: Result | None = None
    #: The copy waited for another holder, which has published the result since.
    answered: bool = False
    held_for_s: float = 0.0


class OutcomeStore(Protocol):
    def recorded(self, job_id: str) -> Result | None: ...

    def record(self, result: Result) -> None: ...

    def claim(self, job_id: str, holder: str, lease_s: float, *, waited: bool = False) -> Claim:
        """In one step: the recorded outcome if there is one, else whether ``holder`` now has
        the lease (held until :meth:`release`, renewed meanwhile). A worker that finishes records
        before it releases, so a lease taken here means no outcome is on its way.

        ``waited``: this message is a copy sent back earlier because the lease was held; it is
        told ``answered`` if that holder has published the result since (checked first)."""

    def release(self, job_id: str, holder: str, *, answered: bool = False) -> None:
        """Give the lease back; ``answered``: the job's result has been published, so copies
        waiting for this lease need none of their own."""


class RedisOutcomeStore:
    """Fleet-wide records and leases in Redis; leases renewed by ``renewer`` while held."""

    # KEYS: outcome, lease, waiters. ARGV: holder, lease_ms, waited (0/1), waiters_ttl_ms.
    # {2}: answered (a waited copy whose holder published), {3, outcome}: recorded,
    # {0, pttl}: held by another, {1}: the lease is now ARGV[1]'s. One round trip.
    _CLAIM = """
if ARGV[3] == '1' and redis.call('GET', KEYS[3]) == 'answered' then return {2} end
local outcome = redis.call('GET', KEYS[1])
if outcome then return {3, outcome} end
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[1] then
  redis.call('SET', KEYS[3], 'waiting', 'PX', ARGV[4])
  return {0, redis.call('PTTL', KEYS[2])}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
return {1}
"""

    # KEYS: lease, waiters. ARGV: holder, answered (0/1), waiters_ttl_ms. Gives the lease back
    # unless another holder has it (it lapsed and moved on); marks waiting copies answered.
    _RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' and redis.call('GET', KEYS[2]) == 'waiting' then
  redis.call('SET', KEYS[2], 'answered', 'PX', ARGV[3])
end
return 1
"""

    def __init__(
        self,
        client: redis.Redis,
        *,
        renewer: LeaseRenewer | None = None,
        commands: PipelinedCommands | None = None,
    ) -> None:
        self._redis = client
        self._renewer = renewer
        #: Pipelines claims and records with other jobs' commands, and sends leases back off the
        #: job's path (None: each its own round trip). A copy that claims the job before its
        #: lease is back finds the outcome recorded, or waits for the lease again.
        self._commands = commands
        self._release = client.register_script(self._RELEASE)
        self._claim = client.register_script(self._CLAIM)

    def recorded(self, job_id: str) -> Result | None:
        with translated():
            raw = self._redis.get(keys.outcome(job_id))
        return None if raw is None else Result.model_validate_json(raw)

    def record(self, result: Result) -> None:
        key, value = keys.outcome(result.job_id), result.to_json()
        with translated():
            if self._commands is None:
                self._redis.set(key, value, ex=OUTCOME_TTL_S)
            else:
                self._commands.call(lambda pipe: pipe.set(key, value, ex=OUTCOME_TTL_S))

    def claim(self, job_id: str, holder: str, lease_s: float, *, waited: bool = False) -> Claim:
        claim_keys = [keys.outcome(job_id), keys.lease(job_id), keys.waiters(job_id)]
        args: list[str | int | float] = [holder, _ms(lease_s), int(waited), _ms(WAITERS_TTL_S)]
        with translated():
            if self._commands is None:
                answer = self._claim(keys=claim_keys, args=args)
            else:
                answer = self._commands.call(script_call(self._claim, claim_keys, args))
        kind = int(answer[0])
        if kind == 3:
            return Claim(recorded=Result.model_validate_json(answer[1]))
        if kind == 2:
            return Claim(answered=True)
        if kind == 0:
            pttl_ms = int(answer[1])
            return Claim(held_for_s=pttl_ms / 1000 if pttl_ms > 0 else lease_s)
        if self._renewer is not None:
            self._renewer.hold(HeldLease(keys.lease(job_id), holder, lease_s))
        return Claim(granted=True)

    def release(self, job_id: str, holder: str, *, answered: bool = False) -> None:
        if self._renewer is not None:
            # Before Redis: a renewal under way must not bring the lease back.
            self._renewer.drop(HeldLease(keys.lease(job_id), holder, 0.0))
        lease_keys = [keys.lease(job_id), keys.waiters(job_id)]
        args: list[str | int | float] = [holder, int(answered), _ms(WAITERS_TTL_S)]
        if self._commands is not None:
            self._commands.send(script_call(self._release, lease_keys, args))
            return
        with translated():
            self._release(keys=lease_keys, args=args)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class LocalOutcomeStore:
    """Records and leases in this process only (no ``REDIS_URL``).

    It keeps the newest ``max_outcomes`` outcomes: a single node's memory, not Redis', bounds
    how much it remembers (about 1-2 KB each). A lease here lasts until it is released: the
    process that holds it holds the store too, so its death takes both, and there is nothing to
    renew (``lease_s`` is accepted for the same interface, and ignored).
    """

    def __init__(self, max_outcomes: int = LOCAL_MAX_OUTCOMES) -> None:
        self._lock = threading.Lock()
        self._max_outcomes = max_outcomes
        self._outcomes: OrderedDict[str, tuple[float, Result]] = OrderedDict()
        self._leases: dict[str, str] = {}
        #: job_id -> (expiry, "waiting" or "answered"), oldest first.
        self._waiters: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def recorded(self, job_id: str) -> Result | None:
        with self._lock:
            return self._recorded(job_id, time.monotonic())

    def _recorded(self, job_id: str, now: float) -> Result | None:
        entry = self._outcomes.get(job_id)
        if entry is None or entry[0] < now:
            self._outcomes.pop(job_id, None)
            return None
        return entry[1]

    def record(self, result: Result) -> None:
        with self._lock:
            self._outcomes[result.job_id] = (time.monotonic() + OUTCOME_TTL_S, result)
            self._outcomes.move_to_end(result.job_id)
            while len(self._outcomes) > self._max_outcomes:
                self._outcomes.popitem(last=False)

    def claim(self, job_id: str, holder: str, lease_s: float, *, waited: bool = False) -> Claim:
        now = time.monotonic()
        with self._lock:
            if waited and self._waiter(job_id, now) == _ANSWERED:
                return Claim(answered=True)
            recorded = self._recorded(job_id, now)
            if recorded is not None:
                return Claim(recorded=recorded)
            current = self._leases.get(job_id)
            if current is not None and current != holder:
                self._mark(job_id, _WAITING, now)
                return Claim(held_for_s=lease_s)
            self._leases[job_id] = holder
            self._waiters.pop(job_id, None)
            return Claim(granted=True)

    def release(self, job_id: str, holder: str, *, answered: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if self._leases.get(job_id) != holder:
                return
            del self._leases[job_id]
            if answered and self._waiter(job_id, now) == _WAITING:
                self._mark(job_id, _ANSWERED, now)

    def _waiter(self, job_id: str, now: float) -> str | None:
        entry = self._waiters.get(job_id)
        if entry is None or entry[0] < now:
            self._waiters.pop(job_id, None)
            return None
        return entry[1]

    def _mark(self, job_id: str, state: str, now: float) -> None:
        self._waiters[job_id] = (now + WAITERS_TTL_S, state)
        self._waiters.move_to_end(job_id)
        while self._waiters and next(iter(self._waiters.values()))[0] < now:
            self._waiters.popitem(last=False)


@dataclass
class LeaseHold:
    """What :meth:`JobLease.held` yields: the recorded outcome (no lease taken), or the lease."""

    recorded: Result | None = None
    #: Set by the holder once the job's result is published: copies waiting need none.
    answered: bool = False


class JobLease:
    """The right to run one ``job_id``, taken without waiting for it."""

    def __init__(self, store: OutcomeStore, *, lease_s: float = JOB_LEASE_S) -> None:
        self._store = store
        self.lease_s = lease_s
        self._holder_prefix = f"{socket.gethostname()}:{os.getpid()}:"

    @contextmanager
    def held(self, job_id: str, *, waited: bool = False) -> Iterator[LeaseHold]:
        """Yield the recorded outcome (no lease taken), or hold the lease for the block.

        Raises :class:`LeaseHeld` when another worker holds it, and :class:`AnsweredByHolder`
        when ``waited`` and the worker it waited for has published the result meanwhile.
        """
        holder = self._holder_prefix + uuid.uuid4().hex
        claim = self._store.claim(job_id, holder, self.lease_s, waited=waited)
        if claim.recorded is not None:
            yield LeaseHold(recorded=claim.recorded)
            return
        if claim.answered:
            raise AnsweredByHolder(f"job {job_id} was answered by the worker it waited for")
        if not claim.granted:
            raise LeaseHeld(job_id, retry_in_s=claim.held_for_s)
        hold = LeaseHold()
        try:
            yield hold
        finally:
            try:
                self._store.release(job_id, holder, answered=hold.answered)
            except StoreUnavailable as exc:
                # Harmless: the lease is no longer renewed, and lapses by itself.
                logger.warning("Lease on job %s not released (%s).", job_id, exc)
