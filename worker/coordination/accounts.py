"""Which account makes each call (docs/contract.md, "Accounts"), and what the answer teaches it.

- A job that names an ``account`` goes to that account; a ``kling`` job without one goes to the
  first account listed (a Kling-generated clip belongs to the account that made it). An unknown
  name is ``invalid_job``, checked before anything else (:meth:`AccountPool.check`).
- Any other job goes to the unpaused account with the most free capacity. Choosing costs no
  Redis round trip: each account remembers the fleet-wide held/limit of this process's latest
  acquire answer on it, corrected by this process's own calls since; an estimate older than
  :data:`STALE_S` keeps only this process's calls (other processes' have likely ended), so an
  account seen full once is tried again soon. The fleet-wide limiter still has the last word:
  the estimate only decides where a call queues.
- Each account has its own breaker; a paused account is passed over, and probed by one call
  once its pause is over (:mod:`worker.coordination.breaker`).
- The breaker is asked again once a call holds its fleet-wide slot, uncached: a call that
  waited while its account was paused is not made, and its job moves to another account when
  it may (else it fails with the pause's error, as one that found the account paused at once).
  A tripping call opens the breaker before it gives its slot back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from contract.jobs import Job, KlingVideo
from worker.coordination.breaker import TRIPPING_ERRORS, BreakerState, BreakerView
from worker.coordination.limits import CallLimiter, CallNotMade, Capacity
from worker.errors import InvalidJob, JobFailure, VideoRejected
from worker.ops import metrics
from worker.upstream.answers import OpenedSession

#: After this long without an acquire answer of this process on an account, its estimate
#: counts only this process's calls.
STALE_S = 1.0


class SessionOpener(Protocol):
    """The upstream client of one account (:class:`~worker.upstream.client.KlingClient`)."""

    def init_selection(self, body: dict[str, Any]) -> OpenedSession: ...

    def close(self) -> None: ...


@dataclass
class _Seen:
    capacity: Capacity
    #: This process's reservations on the account when the answer came.
    local: int
    at: float


class AccountLane:
    """One account as this process uses it: its client, breaker and fleet-wide limiter."""

    def __init__(
        self,
        name: str,
        client: SessionOpener,
        *,
        breaker: BreakerState,
        limiter: CallLimiter,
        max_concurrency: int,
    ) -> None:
        self.name = name
        self.client = client
        self.breaker = breaker
        self.limiter = limiter
        self.max_concurrency = max_concurrency
        # Guarded by the pool's lock: this process's jobs between choosing and call's end.
        self.local = 0
        self.seen: _Seen | None = None

    def free_slots(self, now: float) -> int:
        """Estimated free slots fleet-wide (the pool's lock held)."""
        seen = self.seen
        if seen is None:
            return self.max_concurrency - self.local
        others = max(0, seen.capacity.held - seen.local) if now - seen.at <= STALE_S else 0
        return seen.capacity.limit - others - self.local


class AccountPool:
    """The accounts of this worker process, in the order listed; thread-safe."""

    def __init__(self, lanes: Sequence[AccountLane]) -> None:
        if not lanes:
            raise ValueError("an account pool needs at least one account")
        self.lanes = tuple(lanes)
        self._by_name = {lane.name: lane for lane in self.lanes}
        if len(self._by_name) != len(self.lanes):
            raise ValueError("account names must be unique")
        self._lock = threading.Lock()
        for lane in self.lanes:
            metrics.watch_account(lane.name, paused=_paused_probe(lane.breaker))

    @property
    def names(self) -> list[str]:
        return [lane.name for lane in self.lanes]

    def lane(self, name: str) -> AccountLane:
        return self._by_name[name]

    def check(self, job: Job) -> None:
        """:class:`InvalidJob` when the job names an account this fleet does not have."""
        if job.account is not None and job.account not in self._by_name:
            raise InvalidJob(
                f"account {job.account!r} is not one of this fleet's accounts "
                f"({', '.join(self.names)})"
            )

    def pinned(self, job: Job) -> AccountLane | None:
        """The one account ``job`` may use, or ``None`` when any account will do."""
        if job.account is not None:
            return self._by_name[job.account]
        if isinstance(job.source, KlingVideo):
            return self.lanes[0]
        return None

    def may_fail_over(self, job: Job) -> bool:
        """After an account failure: whether another account may still take ``job``."""
        if self.pinned(job) is not None:
            return False
        return any(_usable(lane.breaker.view()) for lane in self.lanes)

    def reserve(self, job: Job) -> Reservation:
        """The account for ``job``'s next call; raises the paused error when there is none."""
        lane, probe = self._choose(job)
        return Reservation(self, lane, job, probe=probe)

    def _choose(self, job: Job) -> tuple[AccountLane, bool]:
        """An account held for ``job`` and whether its call is the probe (see :meth:`reserve`)."""
        pinned = self.pinned(job)
        if pinned is not None:
            view = pinned.breaker.view()
            if view.error is None:
                return self._hold(pinned), False
            if view.probe_due and pinned.breaker.take_probe():
                return self._hold(pinned), True
            raise view.error
        views = [(lane, lane.breaker.view()) for lane in self.lanes]
        for lane, view in views:
            if view.error is not None and view.probe_due and lane.breaker.take_probe():
                return self._hold(lane), True
        closed = [lane for lane, view in views if view.error is None]
        if not closed:
            raise _every_account_paused([view for _, view in views])
        with self._lock:
            now = time.monotonic()
            # max() keeps the first of equals: ties go to the account listed first.
            lane = max(closed, key=lambda candidate: candidate.free_slots(now))
            lane.local += 1
        return lane, False

    def _hold(self, lane: AccountLane) -> AccountLane:
        with self._lock:
            lane.local += 1
        return lane

    def _saw(self, lane: AccountLane) -> None:
        capacity = lane.limiter.capacity()
        if capacity is not None:
            with self._lock:
                lane.seen = _Seen(capacity, lane.local, time.monotonic())

    def _release(self, lane: AccountLane) -> None:
        with self._lock:
            lane.local -= 1

    def close(self) -> None:
        for lane in self.lanes:
            lane.client.close()
            lane.limiter.close()


class Reservation:
    """One job's hold on an account, from choosing it to the call's end; a context manager.

    :meth:`init_selection` makes the call; leaving the block gives the reservation back (and a
    probe that got no verdict to the next caller).
    """

    def __init__(self, pool: AccountPool, lane: AccountLane, job: Job, *, probe: bool) -> None:
        self._pool = pool
        self.lane = lane
        self._job = job
        #: This call is the one that tests a paused account.
        self.probe = probe
        #: How long the HTTP call took (limiter wait not counted); ``None``: no call made.
        self.call_s: float | None = None
        self._probe_settled = False

    @property
    def name(self) -> str:
        return self.lane.name

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.probe and not self._probe_settled:
            self.lane.breaker.probe_abandoned()
        self._pool._release(self.lane)

    def init_selection(
        self, body: dict[str, Any], *, before_call: Callable[[], None] = lambda: None
    ) -> OpenedSession:
        """One call on this account under its fleet-wide limiter; the account's back-off,
        breaker and metrics learn from the answer. When the account was paused while the call
        waited for its slot, no call is made there: the job moves to another account it may
        use, or fails with the pause's error. ``before_call`` runs last before the call is
        made (its slot held), and may raise to stop the job unmade."""
        # A turn that makes no call leaves its account seen paused for the next choice; the
        # bound only guards against breakers that keep flipping meanwhile.
        turns_left = len(self._pool.lanes) + 1
        while True:
            try:
                return self._call(body, before_call)
            except _PausedMeanwhile as paused:
                turns_left -= 1
                if turns_left == 0:
                    raise paused.error from None
                self._move_on(paused.error)

    def _call(self, body: dict[str, Any], before_call: Callable[[], None]) -> OpenedSession:
        lane = self.lane
        try:
            with lane.limiter.slot():
                self._pool._saw(lane)
                self._admit()
                try:
                    before_call()
                except Exception as exc:
                    raise _StoppedBeforeCall(exc) from exc
                started = time.perf_counter()
                try:
                    with metrics.account_call(lane.name):
                        opened = lane.client.init_selection(body)
                except TRIPPING_ERRORS as exc:
                    # Before the slot goes back: whoever takes it next sees the pause.
                    lane.breaker.trip(exc)
                    self._probe_settled = True
                    raise
                finally:
                    self.call_s = time.perf_counter() - started
        except _StoppedBeforeCall as stopped:
            raise stopped.cause from None  # the slot went back unused
        except TRIPPING_ERRORS:
            raise  # the breaker has heard of it already
        except JobFailure as exc:
            # An answer about the job, not the account: the account works.
            if isinstance(exc, VideoRejected) and exc.billing is not None:
                metrics.count_billed_units(lane.name, exc.billing.units)
            self._passed()
            raise
        if opened.billing is not None:
            metrics.count_billed_units(lane.name, opened.billing.units)
        self._passed()
        return opened

    def _admit(self) -> None:
        """With the slot held: go only if the account is still closed (or this is its probe
        and no call paused it again), read uncached."""
        view = self.lane.breaker.view_now()
        if view.error is not None and not (self.probe and view.probe_due):
            raise _PausedMeanwhile(view.error)

    def _move_on(self, error: JobFailure) -> None:
        """This account was paused while the call waited: hold another account, or raise."""
        if self.probe:
            self.lane.breaker.probe_abandoned()
            self._probe_settled = True
        if self._pool.pinned(self._job) is not None:
            raise error from None
        lane, probe = self._pool._choose(self._job)
        self._pool._release(self.lane)
        self.lane, self.probe, self._probe_settled = lane, probe, False

    def _passed(self) -> None:
        if self.probe:
            self.lane.breaker.probe_passed()
            self._probe_settled = True


class _StoppedBeforeCall(CallNotMade):
    """The job stopped itself with its slot held (its lease in doubt): no call is made."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _PausedMeanwhile(CallNotMade):
    """The account was paused while this call waited for its slot: no call is made."""

    def __init__(self, error: JobFailure) -> None:
        super().__init__(error.message)
        self.error = error


def _usable(view: BreakerView) -> bool:
    return view.error is None or view.probe_due


def _paused_probe(breaker: BreakerState) -> Callable[[], bool]:
    return lambda: breaker.view().error is not None


def _every_account_paused(views: list[BreakerView]) -> JobFailure:
    errors = [view.error for view in views if view.error is not None]
    first = errors[0]
    if len(errors) == 1:
        return first
    return type(first)(
        "every account is paused: " + "; ".join(error.message for error in errors),
        api_code=first.api_code,
    )
