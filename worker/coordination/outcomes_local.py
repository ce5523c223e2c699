"""Outcomes and job leases in this process only (no ``REDIS_URL``): the protocol of
:mod:`worker.coordination.outcomes` on a dictionary, for a single worker node."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from contract.results import Result
from worker.coordination.outcomes import OUTCOME_TTL_S, Claim

#: How many outcomes a worker without ``REDIS_URL`` remembers (the oldest go first).
LOCAL_MAX_OUTCOMES = 50_000


@dataclass
class _Entry:
    expires_at: float
    result: Result
    #: ``None`` until published, then whether the outcome is lasting.
    answered_lasting: bool | None = None


class LocalOutcomeStore:
    """It keeps the newest ``max_outcomes`` outcomes: a single node's memory, not Redis', bounds
    how much it remembers (about 1-2 KB each). A lease here lasts until it is released: the
    process that holds it holds the store too, so its death takes both, and there is nothing to
    renew (``lease_s`` is accepted for the same interface, and ignored).
    """

    def __init__(self, max_outcomes: int = LOCAL_MAX_OUTCOMES) -> None:
        self._lock = threading.Lock()
        self._max_outcomes = max_outcomes
        self._outcomes: OrderedDict[str, _Entry] = OrderedDict()
        self._leases: dict[str, str] = {}

    def recorded(self, job_id: str) -> Result | None:
        with self._lock:
            entry = self._entry(job_id)
            return None if entry is None else entry.result

    def claim(self, job_id: str, holder: str, lease_s: float, *, copy: bool = False) -> Claim:
        with self._lock:
            current = self._leases.get(job_id)
            if current is not None and current != holder:
                return Claim(held_for_s=lease_s)
            entry = self._entry(job_id)
            if entry is not None and entry.answered_lasting is not None:
                if copy:
                    return Claim(answered=True)
                if entry.answered_lasting:
                    return Claim(recorded=entry.result)
                del self._outcomes[job_id]  # passing: a resubmission runs afresh
                entry = None
            self._leases[job_id] = holder
            return Claim(granted=True, recorded=None if entry is None else entry.result)

    def record(self, result: Result, holder: str, lease_s: float) -> bool:
        with self._lock:
            current = self._leases.get(result.job_id)
            if current is not None and current != holder:
                return False
            self._leases[result.job_id] = holder
            self._outcomes[result.job_id] = _Entry(time.monotonic() + OUTCOME_TTL_S, result)
            self._outcomes.move_to_end(result.job_id)
            while len(self._outcomes) > self._max_outcomes:
                self._outcomes.popitem(last=False)
            return True

    def finish(self, job_id: str, holder: str, *, lasting: bool) -> None:
        with self._lock:
            entry = self._outcomes.get(job_id)
            if entry is not None:
                entry.answered_lasting = lasting
            if self._leases.get(job_id) == holder:
                del self._leases[job_id]

    def release(self, job_id: str, holder: str) -> None:
        with self._lock:
            if self._leases.get(job_id) == holder:
                del self._leases[job_id]

    def lease_left_s(self, job_id: str, holder: str) -> float | None:
        with self._lock:
            current = self._leases.get(job_id)
        return None if current is not None and current != holder else math.inf

    def _entry(self, job_id: str) -> _Entry | None:
        entry = self._outcomes.get(job_id)
        if entry is not None and entry.expires_at < time.monotonic():
            del self._outcomes[job_id]
            return None
        return entry
