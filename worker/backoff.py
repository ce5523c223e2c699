"""Exponential backoff with full jitter, bounded by a ceiling."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``n`` (1-based): uniform in ``[c/2, c]``.

    ``c = min(max_s, base_s * 2**(n-1))``.

    The jitter spreads a burst of failed calls out so the fleet does not retry in lockstep; the
    lower half keeps every wait at least ``base_s / 2`` (settings default it so that is 1 s, the
    least Kling asks after a 1303).
    """

    base_s: float
    max_s: float

    def ceiling(self, retry: int) -> float:
        return float(min(self.max_s, self.base_s * 2 ** (retry - 1)))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling(retry)
        return float((rng or random).uniform(ceiling / 2, ceiling))
