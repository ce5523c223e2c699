"""An unreliable API: retryable failures are retried within the budget, permanent ones are
called once."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.testing import RunningSimulator
from tests.chaos.scenarios import permanent_failures, upstream_faults
from tests.chaos.secrets import CHAOS_API_KEY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]


def test_every_job_succeeds_through_retryable_failures_and_the_parallel_task_limit(
    chaos_sim: RunningSimulator, workdir: Path, redis_url: str
) -> None:
    # Given an API failing 25 % of calls with retryable codes and admitting 5 calls at once
    # (1303 beyond), and a worker of 8 threads with 10 attempts per job:
    run = upstream_faults(
        chaos_sim, workdir, CHAOS_API_KEY, jobs=40, fail_rate=0.25, max_concurrency=5
    )
    by_code = run.stats["by_code"]

    # Then every job succeeded, once, and some needed more than one attempt.
    assert not run.tally.missing(run.job_ids)
    assert run.tally.duplicates == 0
    assert {result.status for result in run.tally.results.values()} == {"succeeded"}
    assert max(run.evidence["attempts"]) > 1
    # Both kinds of trouble happened, and each attempt a result reports is a call the API saw.
    assert by_code.get("1303", 0) > 0
    assert sum(n for code, n in by_code.items() if code in ("1302", "5000", "5001", "5002")) > 0
    attempts = sum(result.attempts for result in run.tally.results.values())
    assert attempts == run.stats["calls"]
    assert run.calls_per_video == {
        result.source.video_id: result.attempts  # type: ignore[union-attr]
        for result in run.tally.results.values()
    }


def test_a_permanent_refusal_fails_its_job_after_exactly_one_call(
    chaos_sim: RunningSimulator, workdir: Path, redis_url: str
) -> None:
    # Given an API refusing 30 % of calls for good (kling:1201):
    run = permanent_failures(chaos_sim, workdir, CHAOS_API_KEY, jobs=40, fail_rate=0.3)
    outcomes = run.evidence["outcomes"]

    # Then the refused jobs failed as request_rejected, the rest succeeded, one call each.
    assert not run.tally.missing(run.job_ids)
    assert run.tally.duplicates == 0
    assert set(outcomes) == {"succeeded", "request_rejected"}
    assert outcomes["request_rejected"] == run.stats["by_code"]["1201"]
    assert set(run.calls_per_video.values()) == {1}
    assert len(run.calls_per_video) == 40
    for result in run.tally.results.values():
        assert result.attempts == 1
