"""Exponential backoff with jitter (worker/backoff.py; kling-api.md asks for both)."""

from __future__ import annotations

import random

import pytest

from contract.settings import Settings
from worker.backoff import Backoff

SEEDS = range(200)


def test_ceiling_starts_at_the_base() -> None:
    assert Backoff(base_s=1.0, max_s=30.0).ceiling(1) == 1.0


def test_ceilings_double_until_the_cap() -> None:
    backoff = Backoff(base_s=1.0, max_s=30.0)

    assert [backoff.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_ceilings_double_from_a_fractional_base() -> None:
    backoff = Backoff(base_s=0.25, max_s=100.0)

    assert [backoff.ceiling(n) for n in range(1, 5)] == [0.25, 0.5, 1.0, 2.0]


def test_ceiling_never_exceeds_the_cap_even_far_out() -> None:
    assert Backoff(base_s=1.0, max_s=30.0).ceiling(200) == 30.0


def test_base_above_the_cap_is_capped_from_the_first_retry() -> None:
    assert Backoff(base_s=10.0, max_s=5.0).ceiling(1) == 5.0


@pytest.mark.parametrize("retry", range(1, 10))
def test_delay_stays_within_half_the_ceiling_and_the_ceiling(retry: int) -> None:
    backoff = Backoff(base_s=1.0, max_s=30.0)
    ceiling = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0][retry - 1]

    for seed in SEEDS:
        delay = backoff.delay(retry, random.Random(seed))
        assert ceiling / 2 <= delay <= ceiling


def test_delay_without_an_rng_stays_within_bounds() -> None:
    backoff = Backoff(base_s=2.0, max_s=60.0)

    for _ in range(200):
        assert 2.0 <= backoff.delay(2) <= 4.0


def test_delays_are_jittered() -> None:
    backoff = Backoff(base_s=1.0, max_s=30.0)

    delays = [backoff.delay(3, random.Random(seed)) for seed in SEEDS]

    assert len(set(delays)) > len(delays) // 2
    # Spread over the range, not bunched at one end: some in each half of [2, 4].
    assert any(delay < 3.0 for delay in delays)
    assert any(delay > 3.0 for delay in delays)


def test_successive_draws_from_one_rng_differ() -> None:
    backoff = Backoff(base_s=1.0, max_s=30.0)
    rng = random.Random(7)

    assert len({backoff.delay(4, rng) for _ in range(20)}) > 1


def test_same_seed_gives_the_same_delay() -> None:
    backoff = Backoff(base_s=1.0, max_s=30.0)

    assert backoff.delay(3, random.Random(42)) == backoff.delay(3, random.Random(42))


def test_zero_base_means_no_wait() -> None:
    assert Backoff(base_s=0.0, max_s=30.0).delay(5, random.Random(1)) == 0.0


def test_delay_is_a_float() -> None:
    assert type(Backoff(base_s=1, max_s=30).delay(1, random.Random(1))) is float


def test_default_first_retry_waits_at_least_one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KLING_BACKOFF_BASE_SECONDS", "KLING_BACKOFF_MAX_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)
    backoff = Backoff(
        base_s=defaults.kling_backoff_base_seconds, max_s=defaults.kling_backoff_max_seconds
    )

    for seed in SEEDS:
        assert backoff.delay(1, random.Random(seed)) >= 1.0
