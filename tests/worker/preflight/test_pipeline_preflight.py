"""The pre-flight in the pipeline, end to end: a real KlingClient against the simulator over
HTTP, clips served by a ranged HTTP host (``url`` jobs) and by the S3 test server (``s3`` jobs).

Every rule-breaker fails before the API (0 calls in the simulator's stats); every valid clip
succeeds with exactly one call; a clip the probe cannot read is sent to the API, which decides.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from contract.jobs import S3Object, VideoUrl, make_job
from contract.results import Result
from contract.settings import Settings
from simulator.testing import RunningSimulator
from tests.services import API_KEY
from tests.simulator.clip_host import ClipHost
from tests.worker.preflight.corpus import CORPUS
from worker.accounts import load_accounts
from worker.backoff import Backoff
from worker.coordination.store import Coordination
from worker.pipeline import Pipeline
from worker.preflight import Preflight
from worker.runtime import account_pool
from worker.sources import SourceResolver

MAX_ATTEMPTS = 3


def make_pipeline(
    sim: RunningSimulator,
    s3_endpoint: str,
    *,
    preflight_clips: bool = True,
    private_hosts: bool = True,
) -> Pipeline:
    settings = Settings(
        _env_file=None,
        kling_api_base_url=f"{sim.base_url}/kling",
        kling_api_key=SecretStr(API_KEY),
        kling_timeout_seconds=10.0,
        s3_endpoint_url=s3_endpoint,
        allow_http_video_urls=True,
        allow_private_video_hosts=private_hosts,
        preflight_clips=preflight_clips,
        worker_concurrency=4,
    )
    return Pipeline(
        resolver=SourceResolver.from_settings(settings),
        accounts=account_pool(
            load_accounts(settings), Coordination.from_settings(settings), settings
        ),
        backoff=Backoff(base_s=0.001, max_s=0.001),
        max_attempts=MAX_ATTEMPTS,
        preflight=Preflight.from_settings(settings) if settings.preflight_clips else None,
    )


@pytest.fixture
def pipeline(sim: RunningSimulator, s3_endpoint: str) -> Pipeline:
    return make_pipeline(sim, s3_endpoint)


def run(pipeline: Pipeline, source: S3Object | VideoUrl) -> Result:
    return pipeline.run(make_job(source, allow_http=True)).result


def sources(name: str, host: ClipHost, bucket: str) -> dict[str, S3Object | VideoUrl]:
    return {
        "url": VideoUrl(video_url=host.file_url(name)),
        "s3": S3Object(bucket=bucket, key=name),
    }


@pytest.mark.parametrize("kind", ["url", "s3"])
@pytest.mark.parametrize("name", [n for n, c in CORPUS.items() if c.expect == "rejected"])
def test_a_rule_breaker_fails_before_the_api_with_no_call(
    pipeline: Pipeline,
    sim: RunningSimulator,
    corpus_host: ClipHost,
    corpus_bucket: str,
    name: str,
    kind: str,
) -> None:
    result = run(pipeline, sources(name, corpus_host, corpus_bucket)[kind])

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "video_rejected"
    assert f"{CORPUS[name].breaks} rule" in result.error.message
    assert (result.error.api_code, result.error.http_status) == (None, None)
    assert result.attempts == 1
    assert sim.stats()["calls"] == 0


@pytest.mark.parametrize("kind", ["url", "s3"])
@pytest.mark.parametrize("name", [n for n, c in CORPUS.items() if c.expect == "passed"])
def test_a_valid_clip_succeeds_with_exactly_one_call(
    pipeline: Pipeline,
    sim: RunningSimulator,
    corpus_host: ClipHost,
    corpus_bucket: str,
    name: str,
    kind: str,
) -> None:
    result = run(pipeline, sources(name, corpus_host, corpus_bucket)[kind])

    assert result.status == "succeeded", result.error
    assert sim.stats()["calls"] == 1
    assert result.video is not None
    assert CORPUS[name].facts == (
        result.video.duration_ms,
        result.video.width,
        result.video.height,
        result.video.fps,
    )


@pytest.mark.parametrize("kind", ["url", "s3"])
def test_a_clip_the_probe_cannot_read_goes_to_the_api_which_decides(
    pipeline: Pipeline,
    sim: RunningSimulator,
    corpus_host: ClipHost,
    corpus_bucket: str,
    kind: str,
) -> None:
    result = run(pipeline, sources("sample_moov_cut_short.mp4", corpus_host, corpus_bucket)[kind])

    # Its moov is there, but cut short: the simulator, like Kling, refuses it after its own read.
    assert result.error is not None
    assert result.error.type == "video_rejected"
    assert "data.status=1" in result.error.message
    assert sim.stats()["calls"] == 1


def test_the_large_clip_in_s3_succeeds_without_being_read_whole_by_the_worker(
    pipeline: Pipeline, sim: RunningSimulator, corpus_host: ClipHost, corpus_bucket: str
) -> None:
    url = VideoUrl(video_url=corpus_host.file_url("large.mp4") + "?job=large")

    result = run(pipeline, url)

    assert result.status == "succeeded", result.error
    # The worker's reads and the simulator's (which reads ranged too): far from 34 MB each.
    assert corpus_host.bytes_served("large.mp4?job=large") < 2 * 1024 * 1024
    assert sim.stats()["calls"] == 1


def test_with_preflight_off_a_rule_breaker_costs_a_call(
    sim: RunningSimulator, s3_endpoint: str, corpus_host: ClipHost
) -> None:
    pipeline = make_pipeline(sim, s3_endpoint, preflight_clips=False)

    result = run(pipeline, VideoUrl(video_url=corpus_host.file_url("in_the_gap.mp4")))

    assert result.error is not None
    assert result.error.type == "video_rejected"
    assert result.error.message.startswith("clip rejected (data.status=2)")
    assert sim.stats()["calls"] == 1


def test_a_url_the_host_says_is_gone_fails_as_source_not_found_with_no_call(
    pipeline: Pipeline, sim: RunningSimulator, corpus_host: ClipHost
) -> None:
    result = run(pipeline, VideoUrl(video_url=corpus_host.file_url("x.mp4", route="status/410")))

    assert result.error is not None
    assert (result.error.type, result.error.http_status) == ("source_not_found", 410)
    assert result.attempts == 1
    assert sim.stats()["calls"] == 0


def test_a_failing_clip_host_is_retried_like_an_outage(
    pipeline: Pipeline, sim: RunningSimulator, corpus_host: ClipHost
) -> None:
    url = corpus_host.file_url("faststart.mp4", route="status/503")

    result = run(pipeline, VideoUrl(video_url=url))

    assert result.error is not None
    assert result.error.type == "upstream_unavailable"
    assert result.error.retryable
    assert result.attempts == MAX_ATTEMPTS
    assert corpus_host.requests_for("status/503/faststart.mp4") >= MAX_ATTEMPTS
    assert sim.stats()["calls"] == 0


def test_a_job_retried_after_a_pass_is_not_probed_again(
    pipeline: Pipeline, sim: RunningSimulator, corpus_host: ClipHost
) -> None:
    sim.set_faults(script=["kling:5000", "kling:1302"])
    url = corpus_host.file_url("phone.mov") + "?job=retried"

    result = run(pipeline, VideoUrl(video_url=url))

    assert result.status == "succeeded", result.error
    assert result.attempts == 3
    assert sim.stats()["calls"] == 3
    # The worker's first read asks for 64 KiB (the simulator's for 256 KiB): once, not thrice.
    ranges = [r for path, r, _, _ in corpus_host.served if path.endswith("?job=retried")]
    assert ranges.count("bytes=0-65535") == 1


def test_a_url_on_a_private_host_fails_invalid_job_with_nothing_sent_and_no_call(
    sim: RunningSimulator, s3_endpoint: str, corpus_host: ClipHost
) -> None:
    pipeline = make_pipeline(sim, s3_endpoint, private_hosts=False)
    url = corpus_host.file_url("faststart.mp4") + "?job=private"

    result = run(pipeline, VideoUrl(video_url=url))

    assert result.error is not None
    assert result.error.type == "invalid_job"
    assert "the host is not a public address" in result.error.message
    assert result.attempts == 1
    assert corpus_host.requests_for("faststart.mp4?job=private") == 0
    assert sim.stats()["calls"] == 0
