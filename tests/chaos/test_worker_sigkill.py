"""``kill -9`` a worker with jobs in flight: every job still ends in a result, no job whose
outcome was recorded is called again, and repeats are bounded by what was in flight."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.testing import RunningSimulator
from tests.chaos.fleet import CHAOS_CONCURRENCY
from tests.chaos.scenarios import worker_sigkill
from tests.chaos.secrets import CHAOS_API_KEY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]


def test_a_worker_killed_mid_flight_loses_no_job_and_repeats_no_recorded_call(
    chaos_sim: RunningSimulator, workdir: Path, redis_url: str
) -> None:
    # Given 40 jobs, one video each, against an API answering in 1-2 s, and a worker of 8
    # threads killed with SIGKILL once 12 results are in; when a new worker takes over:
    run = worker_sigkill(chaos_sim, workdir, CHAOS_API_KEY, jobs=40, kill_after=12)
    calls = run.calls_per_video
    recorded = run.evidence["recorded_at_kill"]
    leased = run.evidence["leased_at_kill"]

    # Then every job has its result, and every one is a success.
    assert not run.tally.missing(run.job_ids)
    assert {result.status for result in run.tally.results.values()} == {"succeeded"}
    # No video whose success was recorded before the kill was called again.
    assert all(calls[f"kill-video-{job_id.split('-')[1]}"] == 1 for job_id in recorded)
    # A video called twice was one under lease when the worker died: at most one per thread.
    repeated = {video for video, n in calls.items() if n > 1}
    assert {video.replace("-video-", "-") for video in repeated} <= leased
    assert len(repeated) <= CHAOS_CONCURRENCY
    assert max(calls.values()) <= 2
    # Results published twice: only jobs the dead worker held unacknowledged.
    assert run.tally.duplicates <= CHAOS_CONCURRENCY
