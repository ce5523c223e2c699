"""The pipeline's retry loop, against the simulator over HTTP: what is retried, how often, and
how a job ends when retries run out, the worker stops, or the breaker is open."""

from __future__ import annotations

import threading

import pytest
from pydantic import SecretStr

from contract.jobs import KlingVideo, VideoUrl, make_job
from contract.settings import Settings
from simulator.testing import RunningSimulator
from tests.services import API_KEY
from worker.backoff import Backoff
from worker.coordination.accounts import AccountLane, AccountPool
from worker.coordination.breaker import LocalBreaker
from worker.coordination.limits import unlimited
from worker.errors import StoreUnavailable, WorkerStopping
from worker.pipeline import Pipeline
from worker.sources import SourceResolver
from worker.upstream.client import KlingClient

SOURCE = KlingVideo(video_id="kling-demo-video-1", task_id="kling-demo-task-1")
MAX_ATTEMPTS = 4


def make_pipeline(
    sim: RunningSimulator,
    *,
    backoff_s: float = 0.001,
    breaker: LocalBreaker | None = None,
    stopping: threading.Event | None = None,
) -> Pipeline:
    settings = Settings(
        _env_file=None,
        kling_api_base_url=f"{sim.base_url}/kling",
        kling_api_key=SecretStr(API_KEY),
        kling_timeout_seconds=5.0,
        worker_concurrency=4,
    )
    lane = AccountLane(
        "default",
        KlingClient.from_settings(settings),
        breaker=breaker or LocalBreaker(open_s=0.0),
        limiter=unlimited(),
        max_concurrency=settings.kling_max_concurrency,
    )
    return Pipeline(
        resolver=SourceResolver.from_settings(settings),
        accounts=AccountPool([lane]),
        backoff=Backoff(base_s=backoff_s, max_s=backoff_s),
        max_attempts=MAX_ATTEMPTS,
        stopping=stopping or threading.Event(),
    )


@pytest.mark.parametrize("code", ["kling:1302", "kling:1303", "kling:5000", "comet:503", "drop"])
def test_a_retryable_failure_is_tried_again_until_it_succeeds(
    sim: RunningSimulator, code: str
) -> None:
    sim.set_faults(script=[code, code])
    ran = make_pipeline(sim).run(make_job(SOURCE))
    assert ran.result.status == "succeeded", ran.result.error
    assert ran.result.attempts == 3
    assert sim.stats()["calls"] == 3
    assert ran.upstream_s is not None
    assert ran.upstream_s > 0


def test_retries_stop_at_the_budget_with_upstream_unavailable_and_the_last_code(
    sim: RunningSimulator,
) -> None:
    sim.set_faults(script=["kling:5001"] * (MAX_ATTEMPTS + 2))
    result = make_pipeline(sim).run(make_job(SOURCE)).result
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "upstream_unavailable"
    assert result.error.api_code == 5001
    assert result.error.retryable
    assert result.attempts == MAX_ATTEMPTS
    assert sim.stats()["calls"] == MAX_ATTEMPTS


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("kling:1201", "request_rejected"),
        ("kling:1102", "account_blocked"),
        ("kling:1000", "auth_failed"),
        ("html", "bad_gateway_answer"),
    ],
)
def test_a_terminal_failure_is_not_retried(
    sim: RunningSimulator, code: str, error_type: str
) -> None:
    sim.set_faults(script=[code])
    result = make_pipeline(sim).run(make_job(SOURCE)).result
    assert result.error is not None
    assert result.error.type == error_type
    assert result.attempts == 1
    assert sim.stats()["calls"] == 1


def test_a_job_waiting_to_retry_is_handed_back_when_the_worker_stops(
    sim: RunningSimulator,
) -> None:
    sim.set_faults(script=["kling:5000"])
    stopping = threading.Event()
    pipeline = make_pipeline(sim, backoff_s=30.0, stopping=stopping)
    threading.Timer(0.2, stopping.set).start()
    with pytest.raises(WorkerStopping):
        pipeline.run(make_job(SOURCE))
    assert sim.stats()["calls"] == 1


def test_an_open_breaker_fails_jobs_without_calling(sim: RunningSimulator) -> None:
    sim.set_faults(script=["kling:1101"])
    breaker = LocalBreaker(open_s=60.0)
    pipeline = make_pipeline(sim, breaker=breaker)
    first = pipeline.run(make_job(SOURCE)).result
    second = pipeline.run(make_job(SOURCE))
    assert first.error is not None
    assert first.error.type == "account_blocked"
    assert second.result.error is not None
    assert second.result.error.type == "account_blocked"
    assert "paused" in second.result.error.message
    assert second.upstream_s is None
    assert sim.stats()["calls"] == 1


def test_whatever_escapes_a_job_ends_it_in_one_internal_error_result(
    sim: RunningSimulator,
) -> None:
    # Given a fault no layer knows, raised where it carries a secret in its text
    def broken() -> None:
        raise OverflowError("int too large, from https://u:hunter2@h/a.mp4?X-Amz-Signature=s")

    ran = make_pipeline(sim).run(make_job(SOURCE), before_call=broken)

    assert ran.result.status == "failed"
    assert ran.result.error is not None
    assert ran.result.error.type == "internal_error"
    assert ran.result.error.retryable is True
    # The message names the kind of fault, never its text.
    assert "OverflowError" in ran.result.error.message
    assert "hunter2" not in ran.result.to_json()
    assert sim.stats()["calls"] == 0


def test_a_lease_in_doubt_stops_the_job_before_its_call(sim: RunningSimulator) -> None:
    def lease_in_doubt() -> None:
        raise StoreUnavailable("the lease could not be renewed in time; no call made")

    with pytest.raises(StoreUnavailable):
        make_pipeline(sim).run(make_job(SOURCE), before_call=lease_in_doubt)
    assert sim.stats()["calls"] == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.0.0.7", "[::1]", "localhost"])
def test_a_url_job_on_a_non_public_host_is_invalid_with_no_call_and_no_preflight(
    sim: RunningSimulator, host: str
) -> None:
    pipeline = make_pipeline(sim)
    pipeline.public_url_hosts = True  # ALLOW_PRIVATE_VIDEO_HOSTS off, PREFLIGHT_CLIPS=false
    job = make_job(VideoUrl(video_url=f"http://{host}/latest/clip.mp4"), allow_http=True)

    ran = pipeline.run(job)

    assert ran.result.error is not None
    assert ran.result.error.type == "invalid_job"
    assert "not a public address" in ran.result.error.message
    assert sim.stats()["calls"] == 0
