"""The pipeline calls the upstream through its limiter: the cap holds, and "busy" slows it down."""

from __future__ import annotations

import threading

from pydantic import SecretStr

from contract.jobs import KlingVideo, make_job
from contract.settings import Settings
from simulator.testing import RunningSimulator
from tests.services import API_KEY
from worker.backoff import Backoff
from worker.coordination.accounts import AccountLane, AccountPool
from worker.coordination.breaker import LocalBreaker
from worker.coordination.limits import LocalLimiter
from worker.pipeline import Pipeline
from worker.sources import SourceResolver
from worker.upstream.client import KlingClient

SOURCE = KlingVideo(video_id="kling-demo-video-1", task_id="kling-demo-task-1")


def pipeline(sim: RunningSimulator, limiter: LocalLimiter) -> Pipeline:
    settings = Settings(
        _env_file=None,
        kling_api_base_url=f"{sim.base_url}/kling",
        kling_api_key=SecretStr(API_KEY),
        kling_timeout_seconds=5.0,
        worker_concurrency=16,
    )
    lane = AccountLane(
        "default",
        KlingClient.from_settings(settings),
        breaker=LocalBreaker(open_s=0.0),
        limiter=limiter,
        max_concurrency=limiter.max_concurrency,
    )
    return Pipeline(
        resolver=SourceResolver.from_settings(settings),
        accounts=AccountPool([lane]),
        backoff=Backoff(base_s=0.01, max_s=0.02),
        max_attempts=4,
    )


def test_jobs_never_have_more_calls_in_flight_than_the_cap(sim: RunningSimulator) -> None:
    sim.set_faults(latency_ms=100)
    runner = pipeline(sim, LocalLimiter(max_concurrency=3))
    results = []

    def run() -> None:
        results.append(runner.run(make_job(SOURCE)).result)

    threads = [threading.Thread(target=run) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [result.status for result in results] == ["succeeded"] * 12
    assert sim.stats()["peak_in_flight"] == 3


def test_busy_answers_beyond_the_tolerance_lower_the_in_flight_target(
    sim: RunningSimulator,
) -> None:
    # Each job's first call answers 1303 and its retry succeeds: half the answers are busy.
    sim.set_faults(script=["kling:1303", "ok"] * 10)
    limiter = LocalLimiter(max_concurrency=10)
    runner = pipeline(sim, limiter)
    first = runner.run(make_job(SOURCE)).result
    # One busy answer alone does not slow the fleet (a shared account refuses now and then) ...
    assert (first.status, first.attempts) == ("succeeded", 2)
    assert limiter.target() == 10
    # ... half of a window's answers busy does: the fleet keeps the share that got through.
    results = [runner.run(make_job(SOURCE)).result for _ in range(9)]
    assert [result.attempts for result in results] == [2] * 9
    assert limiter.stats.busy_answers == 10
    assert limiter.target() < 10
