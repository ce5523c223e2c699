"""Exactly one result per ``job_id``: the lease that lets one worker run a job, and the record
that outlives it.

The protocol, for every message of a job (the stores behind it: :mod:`.outcomes_redis` for the
fleet, :mod:`.outcomes_local` for one process):

1. **Claim.** One atomic step finds what is known of the ``job_id``: a lease another worker
   holds (this copy goes back to wait: :class:`LeaseHeld`); a result already published (a
   *copy* of the job, redelivered or sent back to wait, ends with none of its own:
   :class:`AnsweredByHolder`; a *resubmission* gets a lasting outcome published again, and runs
   afresh after a passing one); a result recorded but never published (its holder died in
   between: it is published now, with no call); or nothing, and the lease is taken.
2. **Run**, renewing the lease; before each call the lease must be sure to hold
   (:meth:`LeaseHold.ensure_standing`), so a worker cut off from Redis stops before it calls.
3. **Record** the outcome, whatever it is, before it is published: only while the lease is
   still ours (:class:`TakenOver` otherwise: another worker runs the job now).
4. **Publish**, then **finish**: mark the result published and give the lease back, in one
   step that must reach the store before the job's message is acknowledged.

Lasting outcomes say something about the job itself (success, a rejected clip or request);
passing ones (our account, our configuration, an outage) let a resubmission try again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from contract.results import Result
from worker.errors import KlingWorkerError, StoreUnavailable

logger = logging.getLogger(__name__)

#: How long outcomes are remembered: the contract promises at least 7 days.
OUTCOME_TTL_S = 8 * 24 * 3600
#: How long a job's lease outlives its holder's last renewal: how soon a dead worker's jobs can
#: run again. Renewed every quarter of it, so a live holder survives a few seconds of Redis away.
JOB_LEASE_S = 10.0
#: Outcomes that say something lasting about the job itself: a resubmission of the ``job_id``
#: is answered with the same outcome. Any other is passing: a resubmission is tried afresh.
LASTING_OUTCOMES = frozenset({None, "video_rejected", "request_rejected"})
#: How long recording an outcome or finishing a job keeps trying while the store is away.
STORE_PATIENCE_S = 8.0
#: The least lease a call may start on: a call that outlives its lease could run twice.
MIN_LEASE_LEFT_FRACTION = 0.5


def is_lasting(result: Result) -> bool:
    return (result.error.type if result.error else None) in LASTING_OUTCOMES


class LeaseHeld(KlingWorkerError):
    """Raised when another live worker holds the job's lease: hand this copy back to the broker
    and try again after ``retry_in_s`` (no call was made)."""

    def __init__(self, job_id: str, *, retry_in_s: float) -> None:
        super().__init__(f"job {job_id} is running on another worker")
        self.retry_in_s = retry_in_s


class AnsweredByHolder(KlingWorkerError):
    """Raised when this copy's job has its result published already: acknowledge the copy,
    with no call and no second result."""


class TakenOver(AnsweredByHolder):
    """Raised when this worker's lease lapsed and another worker holds it now: that worker
    answers the job, so this copy ends with no result of its own."""


class FinishFailed(StoreUnavailable):
    """Raised when an outcome could not be recorded, or its publication marked, in the store:
    the job's message must not be acknowledged."""


@dataclass(frozen=True)
class Claim:
    """What a claim on a job found (see the module's protocol, step 1)."""

    #: The lease is this worker's now: run the job, or publish ``recorded`` if it is set.
    granted: bool = False
    #: A result to publish: a lasting one again (no lease), or one never published (leased).
    recorded: Result | None = None
    #: A copy of a job whose result is out: it ends with none of its own.
    answered: bool = False
    #: Another worker holds the lease for this much longer (unless it renews it).
    held_for_s: float = 0.0


class OutcomeStore(Protocol):
    """Where outcomes and leases live; every method raises
    :class:`~worker.errors.StoreUnavailable` when the store does not answer."""

    def recorded(self, job_id: str) -> Result | None: ...

    def claim(self, job_id: str, holder: str, lease_s: float, *, copy: bool = False) -> Claim:
        """Step 1, atomically. ``copy``: this message may be a copy of one already answered
        (redelivered by the broker, or sent back to wait for a lease)."""

    def record(self, result: Result, holder: str, lease_s: float) -> bool:
        """Step 3: keep ``result`` while ``holder`` still holds (or can take back) the lease;
        ``False`` when another holder has it."""

    def finish(self, job_id: str, holder: str, *, lasting: bool) -> None:
        """Step 4: the recorded result is published; give the lease back."""

    def release(self, job_id: str, holder: str) -> None:
        """Give the lease back with no result (the job goes back to the broker)."""

    def lease_left_s(self, job_id: str, holder: str) -> float | None:
        """How long the lease is sure to hold (``inf`` for a lease that cannot lapse), or
        ``None`` once it is lost to another holder."""


@dataclass
class LeaseHold:
    """What :meth:`JobLease.held` yields: a result to publish, or the lease to run the job."""

    job_id: str
    holder: str
    lease: JobLease
    #: Publish this (no call): a lasting outcome again, or one its holder never published.
    recorded: Result | None = None
    #: Whether this hold owns the lease (not for a lasting outcome published again).
    leased: bool = True
    #: Set once the result is published and finished: nothing left to give back.
    finished: bool = False

    def ensure_standing(self) -> None:
        """Return when the lease is sure to outlast the start of a call; raise
        :class:`TakenOver` when it is lost, :class:`StoreUnavailable` when its renewal cannot
        be confirmed in time (no call is made either way)."""
        self.lease.ensure_standing(self.job_id, self.holder)

    def record(self, result: Result) -> None:
        """Step 3; raises :class:`TakenOver` or :class:`FinishFailed`."""
        self.lease.record(result, self.holder)

    def finish(self, result: Result) -> None:
        """Step 4; raises :class:`FinishFailed`."""
        self.lease.finish(result, self.holder)
        self.finished = True


T = TypeVar("T")


class JobLease:
    """The right to run one ``job_id``, taken without waiting for it; the protocol's steps."""

    def __init__(
        self,
        store: OutcomeStore,
        *,
        lease_s: float = JOB_LEASE_S,
        patience_s: float = STORE_PATIENCE_S,
    ) -> None:
        self._store = store
        self.lease_s = lease_s
        self._patience_s = patience_s
        self._holder_prefix = f"{socket.gethostname()}:{os.getpid()}:"

    @contextmanager
    def held(self, job_id: str, *, copy: bool = False) -> Iterator[LeaseHold]:
        """Claim ``job_id`` and yield what to do; the lease, if taken, is given back at the end
        of the block unless the hold finished.

        Raises :class:`LeaseHeld` when another worker holds it, and :class:`AnsweredByHolder`
        when ``copy`` and the job's result is out.
        """
        holder = self._holder_prefix + uuid.uuid4().hex
        claim = self._store.claim(job_id, holder, self.lease_s, copy=copy)
        if claim.answered:
            raise AnsweredByHolder(f"job {job_id} has its result published already")
        if not claim.granted and claim.recorded is None:
            raise LeaseHeld(job_id, retry_in_s=claim.held_for_s)
        hold = LeaseHold(job_id, holder, self, recorded=claim.recorded, leased=claim.granted)
        try:
            yield hold
        finally:
            if hold.leased and not hold.finished:
                self._give_back(job_id, holder)

    def ensure_standing(self, job_id: str, holder: str) -> None:
        left = self._store.lease_left_s(job_id, holder)
        if left is None:
            raise TakenOver(f"job {job_id}: the lease lapsed and another worker holds it now")
        if left < self.lease_s * MIN_LEASE_LEFT_FRACTION:
            raise StoreUnavailable(
                f"the lease on job {job_id} could not be renewed in time ({left:.1f} s left); "
                "no call made"
            )

    def record(self, result: Result, holder: str) -> None:
        kept = self._patiently(
            "record the outcome", lambda: self._store.record(result, holder, self.lease_s)
        )
        if not kept:
            raise TakenOver(
                f"job {result.job_id}: the lease lapsed during the call and another worker "
                "holds it now; its result will be the job's"
            )

    def finish(self, result: Result, holder: str) -> None:
        lasting = is_lasting(result)
        self._patiently(
            "mark the result published",
            lambda: self._store.finish(result.job_id, holder, lasting=lasting),
        )

    def _patiently(self, what: str, step: Callable[[], T]) -> T:
        """``step``, tried again while the store is away, for up to the patience."""
        deadline = time.monotonic() + self._patience_s
        pause_s = 0.25
        while True:
            try:
                return step()
            except StoreUnavailable as exc:
                if time.monotonic() + pause_s > deadline:
                    raise FinishFailed(f"could not {what}: {exc}") from exc
                logger.warning("Could not %s (%s); trying again in %.2f s.", what, exc, pause_s)
                time.sleep(pause_s)
                pause_s = min(pause_s * 2, 2.0)

    def _give_back(self, job_id: str, holder: str) -> None:
        try:
            self._store.release(job_id, holder)
        except StoreUnavailable as exc:
            # Harmless: the lease is no longer renewed, and lapses by itself.
            logger.warning("Lease on job %s not released (%s).", job_id, exc)
