"""The bytes the probes of one worker process may buffer at once (docs/preflight.md).

One probe keeps at most ``ReadLimits.max_bytes`` (4 MiB), and a process runs up to
``WORKER_CONCURRENCY`` jobs at once (2,000 under gevent): without a bound, a burst of large clips
could hold gigabytes. So every ranged read first takes its bytes from the process's
:class:`ByteBudget`, waiting (no longer than the probe's own deadline) while others hold it.

Probes take their bytes read by read, not 4 MiB each up front: a typical probe holds some 70 KB,
and a host that trickles holds only its first read's worth. Waiting while holding could lock up
(every probe holding some, each waiting for more), so the budget keeps back a reserve of one
probe's largest need: a probe that already holds bytes and finds the shared pool short draws on
it, one probe at a time. That probe can always finish, and release what it holds.
"""

from __future__ import annotations

import threading

from worker.preflight.deadline import Deadline

#: The default budget of one worker process: 64 MiB, some 900 typical probes at once (each
#: first read is 64 KiB), or 15 that each need the full 4 MiB.
PREFLIGHT_BUFFER_BYTES = 64 * 1024 * 1024


class ByteBudget:
    """Bytes shared by the probes of one process; thread- and greenlet-safe."""

    def __init__(self, capacity: int, *, reserve: int) -> None:
        if capacity < 2 * reserve:
            raise ValueError(f"a budget of {capacity} bytes cannot keep back {reserve} twice")
        self.capacity = capacity
        self._changed = threading.Condition()
        self._pool = capacity - reserve
        self._reserve = reserve
        self._reserve_holder: Share | None = None

    def share(self) -> Share:
        """A probe's share, empty until it takes bytes."""
        return Share(self)

    @property
    def held(self) -> int:
        """Bytes held by all probes now."""
        with self._changed:
            return self.capacity - self._pool - self._reserve

    def _take(self, share: Share, count: int, deadline: Deadline) -> bool:
        with self._changed:
            while not self._grant(share, count):
                remaining_s = deadline.remaining_s()
                if remaining_s <= 0:
                    return False
                self._changed.wait(remaining_s)
            return True

    def _grant(self, share: Share, count: int) -> bool:
        if count <= self._pool:
            self._pool -= count
            share.pooled += count
            return True
        # Only a probe that holds bytes may use the reserve (a new one waits for the pool).
        holds = share.pooled + share.reserved > 0
        if holds and self._reserve_holder in (None, share) and count <= self._reserve:
            self._reserve_holder = share
            self._reserve -= count
            share.reserved += count
            return True
        return False

    def _give_back(self, share: Share, count: int) -> None:
        with self._changed:
            from_reserve = min(count, share.reserved)
            share.reserved -= from_reserve
            self._reserve += from_reserve
            from_pool = min(count - from_reserve, share.pooled)
            share.pooled -= from_pool
            self._pool += from_pool
            if self._reserve_holder is share and share.reserved == 0:
                self._reserve_holder = None
            self._changed.notify_all()


class Share:
    """What one probe holds of a :class:`ByteBudget`; used by that probe's thread only."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.pooled = 0
        self.reserved = 0

    @property
    def held(self) -> int:
        return self.pooled + self.reserved

    def take(self, count: int, deadline: Deadline) -> bool:
        """Take ``count`` more bytes, waiting until ``deadline`` at most; False when it passed."""
        return count <= 0 or self._budget._take(self, count, deadline)

    def give_back(self, count: int) -> None:
        """Return ``count`` of the bytes held (a read that brought fewer than it took)."""
        if count > 0:
            self._budget._give_back(self, min(count, self.held))

    def release(self) -> None:
        """Return everything: the probe is over."""
        self.give_back(self.held)
