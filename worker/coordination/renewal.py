"""Leases that prove their holder is alive: short, and renewed by the process that holds them.

A job's lease and a call's fleet-wide slot last only seconds. One thread per worker process
(:class:`LeaseRenewer`) extends every lease the process holds, all of them in **one** Lua script
call per tick, however many jobs and calls are under way. A live worker's leases therefore never
lapse, however long its retries take; a dead worker's lapse within one lease time, so another
worker can take its jobs and its slots back within seconds.

Two kinds of lease are renewed:

- a *key* whose value is the holder's id (a job's lease), extended only while it still holds
  that id, so a lease that lapsed and was taken by another worker is never stolen back;
- a *member* of a sorted set scored by its expiry in µs (a call's slot), extended only while
  it is still in the set.

A lease found lapsed (Redis was away longer than the lease, or restarted without it) is taken
again if nobody else has it, and marked lost otherwise. Times come from Redis' clock.

The renewer also knows, for each lease, how long it is sure to hold (:meth:`LeaseRenewer.left_s`):
from the start of the last renewal that reached Redis, or from when the lease was taken. A job
asks before each call, and stops rather than call on a lease that may lapse under it. Ticks run
at a fixed rate on a connection of their own whose timeout is one tick, so one stalled tick
costs one tick, never the lease.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import redis

from worker.coordination.translation import translated
from worker.errors import StoreUnavailable

logger = logging.getLogger(__name__)

#: Renewals per lease time: a lease survives this many ticks in a row failing, less one.
RENEWALS_PER_LEASE = 4
#: The shortest tick, whatever the leases (a lease set absurdly short must not spin).
MIN_TICK_S = 0.1

# KEYS: one per lease (a key lease's key, or a slot's sorted set).
# ARGV: three per lease: kind ('k' key, 'z' sorted-set member), holder or member, lease in ms.
# Extends each lease still held; returns the 1-based indexes of those that were not.
_RENEW = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lapsed = {}
for i = 1, #KEYS do
  local kind, member, ms = ARGV[3 * i - 2], ARGV[3 * i - 1], tonumber(ARGV[3 * i])
  if kind == 'k' then
    if redis.call('GET', KEYS[i]) == member then
      redis.call('PEXPIRE', KEYS[i], ms)
    else
      lapsed[#lapsed + 1] = i
    end
  elseif redis.call('ZSCORE', KEYS[i], member) then
    redis.call('ZADD', KEYS[i], 'XX', now_us + ms * 1000, member)
    if redis.call('PTTL', KEYS[i]) < ms + 1000 then
      redis.call('PEXPIRE', KEYS[i], ms + 1000)
    end
  else
    lapsed[#lapsed + 1] = i
  end
end
return lapsed
"""

# The same layout, for the leases found lapsed: each is taken again unless another holder has
# it. Returns the 1-based indexes of those another holder has.
_REGAIN = """
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lost = {}
for i = 1, #KEYS do
  local kind, member, ms = ARGV[3 * i - 2], ARGV[3 * i - 1], tonumber(ARGV[3 * i])
  if kind == 'k' then
    if not redis.call('SET', KEYS[i], member, 'NX', 'PX', ms) then
      if redis.call('GET', KEYS[i]) ~= member then
        lost[#lost + 1] = i
      end
    end
  else
    redis.call('ZADD', KEYS[i], 'NX', now_us + ms * 1000, member)
    if redis.call('PTTL', KEYS[i]) < ms + 1000 then
      redis.call('PEXPIRE', KEYS[i], ms + 1000)
    end
  end
end
return lost
"""


@dataclass(frozen=True)
class HeldLease:
    """One lease this process holds: ``key`` names it, ``member`` is the holder's mark in it."""

    key: str
    member: str
    lease_s: float
    #: A member of the sorted set ``key`` (a call slot) rather than a key of its own (a job).
    in_sorted_set: bool = False
    #: When (monotonic) the lease was asked for: it holds for ``lease_s`` from then at least.
    taken_at: float = field(default=0.0, compare=False)

    @property
    def what(self) -> str:
        return f"slot {self.member} in {self.key}" if self.in_sorted_set else f"lease {self.key}"


@dataclass
class RenewalReport:
    """What one tick did."""

    #: Whether Redis was asked at all (not when no lease is held).
    asked: bool = False
    renewed: int = 0
    regained: list[HeldLease] = field(default_factory=list)
    lost: list[HeldLease] = field(default_factory=list)


def tick_s_for(*lease_s: float) -> float:
    """How often to renew so that the shortest lease survives a few failed ticks."""
    return max(MIN_TICK_S, min(lease_s) / RENEWALS_PER_LEASE)


class LeaseRenewer:
    """The leases of one worker process, and the thread that keeps them alive.

    Holders call :meth:`hold` once a lease is theirs and :meth:`drop` *before* they give it back
    in Redis, so a renewal can never bring back a lease already given back (:meth:`renew_once`
    takes back lapsed leases under the same lock as :meth:`drop`).
    """

    def __init__(self, client: redis.Redis, *, tick_s: float) -> None:
        self._redis = client
        self.tick_s = tick_s
        self._renew = client.register_script(_RENEW)
        self._regain = client.register_script(_REGAIN)
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], HeldLease] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: When renewals began failing (monotonic), or None while they work.
        self._failing_since: float | None = None
        self._last_alarm = 0.0
        #: When (monotonic) the last renewal that reached Redis was sent: every lease held then
        #: holds until this plus its lease time.
        self._confirmed_at = -math.inf
        #: Leases found taken by another holder, until their holder drops them.
        self._lost: set[tuple[str, str]] = set()

    def hold(self, lease: HeldLease) -> None:
        with self._lock:
            self._held[(lease.key, lease.member)] = lease

    def drop(self, lease: HeldLease) -> None:
        with self._lock:
            self._held.pop((lease.key, lease.member), None)
            self._lost.discard((lease.key, lease.member))

    def left_s(self, lease: HeldLease) -> float | None:
        """How long ``lease`` is sure to hold from now; ``None`` once another holder has it.

        A lease this renewer does not hold (never taken here, or dropped) has nothing left.
        """
        with self._lock:
            if (lease.key, lease.member) in self._lost:
                return None
            held = self._held.get((lease.key, lease.member))
            confirmed_at = self._confirmed_at
        if held is None:
            return 0.0
        return max(held.taken_at, confirmed_at) + held.lease_s - time.monotonic()

    def held(self) -> list[HeldLease]:
        with self._lock:
            return list(self._held.values())

    def start(self) -> None:
        """Start the renewal thread (once; a daemon, so a stuck Redis never blocks exit)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing: the leases still held lapse by themselves after their lease time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.tick_s + 15)
            self._thread = None

    def close(self) -> None:
        """Close the renewer's Redis connection (after :meth:`stop`)."""
        self._redis.close()

    def renew_once(self) -> RenewalReport:
        """Extend every lease held now in one script call; take back any found lapsed.

        Raises :class:`StoreUnavailable` when Redis does not answer.
        """
        leases = self.held()
        report = RenewalReport()
        if not leases:
            return report
        sent_at = time.monotonic()
        with translated():
            lapsed = self._renew(keys=[lease.key for lease in leases], args=_args(leases))
        with self._lock:
            self._confirmed_at = max(self._confirmed_at, sent_at)
        report.asked = True
        report.renewed = len(leases) - len(lapsed)
        if lapsed:
            self._take_back([leases[int(i) - 1] for i in lapsed], report)
        return report

    def _take_back(self, lapsed: list[HeldLease], report: RenewalReport) -> None:
        # Under the lock: a lease dropped meanwhile (its job ended) must stay given back.
        with self._lock:
            still = [lease for lease in lapsed if (lease.key, lease.member) in self._held]
            if not still:
                return
            with translated():
                lost = self._regain(keys=[lease.key for lease in still], args=_args(still))
            lost_leases = [still[int(i) - 1] for i in lost]
            for lease in lost_leases:
                # Kept as lost, not forgotten: its job asks before it calls or records.
                self._held.pop((lease.key, lease.member), None)
                self._lost.add((lease.key, lease.member))
        report.lost = lost_leases
        report.regained = [lease for lease in still if lease not in lost_leases]
        for lease in report.regained:
            logger.warning("The %s had lapsed (Redis was away too long); taken again.", lease.what)
        for lease in report.lost:
            logger.error(
                "The %s lapsed and another worker holds it now: this worker makes no call on "
                "it and publishes no result for it.",
                lease.what,
            )

    def _run(self) -> None:
        # At a fixed rate: a slow tick delays the next one by no more than its own overrun.
        next_at = time.monotonic() + self.tick_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + self.tick_s, time.monotonic())
            self.tick()

    def tick(self) -> None:
        """One renewal, its failure logged rather than raised (the thread must keep going)."""
        try:
            report = self.renew_once()
        except StoreUnavailable as exc:
            self._renewal_failed(exc)
            return
        except Exception:
            logger.exception("Lease renewal failed unexpectedly; trying again next tick.")
            return
        if report.asked and self._failing_since is not None:
            logger.warning(
                "Lease renewal works again after %.1f s.", time.monotonic() - self._failing_since
            )
            self._failing_since = None

    def _renewal_failed(self, exc: StoreUnavailable) -> None:
        now = time.monotonic()
        leases = self.held()
        if self._failing_since is None:
            self._failing_since = self._last_alarm = now
            logger.warning("Could not renew %d leases (%s); trying again.", len(leases), exc)
            return
        shortest = min((lease.lease_s for lease in leases), default=None)
        # Once a lease time has passed without a renewal, say so (once per lease time).
        if shortest is not None and now - self._last_alarm >= shortest:
            self._last_alarm = now
            logger.error(
                "Leases not renewed for %.1f s (%s): %d may have lapsed, and another worker "
                "could take their jobs.",
                now - self._failing_since,
                exc,
                len(leases),
            )


def _args(leases: list[HeldLease]) -> list[str | int]:
    args: list[str | int] = []
    for lease in leases:
        args += ["z" if lease.in_sorted_set else "k", lease.member, round(lease.lease_s * 1000)]
    return args
