"""The pipeline end to end, on RabbitMQ and on Redis: producer → worker → API → result queue."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from producers import KlingVideo, S3Object, VideoUrl
from simulator.samples import SAMPLE_CLIPS
from tests.integration.stack import Stack
from tests.services import API_KEY, PUBLIC_BUCKET, SAMPLES_BUCKET


def s3_clip(name: str) -> S3Object:
    return S3Object(bucket=SAMPLES_BUCKET, key=f"clips/{SAMPLE_CLIPS[name].filename}")


def test_kling_video_job_opens_a_session_with_video_id_and_task_id(stack: Stack) -> None:
    stack.sim.add_video("vid-42", "task-42", duration_ms=5000, fps=30, width=1280, height=720)

    job_id = stack.submit(KlingVideo(video_id="vid-42", task_id="task-42"), {"upload_id": 42})
    result = stack.result(job_id)

    assert result.status == "succeeded", result.error
    assert result.session_id
    assert result.error is None
    assert result.metadata == {"upload_id": 42}
    assert result.source == KlingVideo(video_id="vid-42", task_id="task-42")
    assert result.session_expires_at == result.completed_at + timedelta(hours=24)
    assert result.video is not None
    assert result.video.duration_ms == 5000
    (call,) = stack.sim.requests()
    assert call["body"] == {"video_id": "vid-42", "task_id": "task-42"}
    assert call["authorization"] == f"Bearer {API_KEY}"
    assert result.kling_request_id  # the API's request id, for support tickets


def test_s3_job_sends_a_presigned_url_the_api_can_download(stack: Stack) -> None:
    clip = SAMPLE_CLIPS["valid_mp4"]

    result = stack.result(stack.submit(s3_clip("valid_mp4")))

    assert result.status == "succeeded", result.error
    (call,) = stack.sim.requests()
    video_url = call["body"]["video_url"]
    assert set(call["body"]) == {"video_url"}
    assert "X-Amz-Signature" in parse_qs(urlsplit(video_url).query)
    # The facts come from the simulator's probe of the downloaded clip.
    assert result.video is not None
    assert result.video.fps == clip.fps
    assert result.video.duration_ms == clip.duration_ms
    assert (result.video.width, result.video.height) == (clip.width, clip.height)
    assert result.video.total_frames == clip.total_frames
    # The result echoes the source as submitted: never the presigned URL.
    assert result.source == s3_clip("valid_mp4")
    assert "Signature" not in result.to_json()


def test_url_job_passes_the_url_through(stack: Stack, s3_endpoint: str) -> None:
    url = f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/{SAMPLE_CLIPS['valid_mov'].filename}"

    result = stack.result(stack.submit(VideoUrl(video_url=url)))

    assert result.status == "succeeded", result.error
    assert stack.sim.requests()[0]["body"] == {"video_url": url}
    assert result.video is not None
    assert result.video.fps == SAMPLE_CLIPS["valid_mov"].fps


def test_missing_s3_object_fails_as_source_not_found_without_calling_the_api(
    stack: Stack,
) -> None:
    result = stack.result(stack.submit(S3Object(bucket=SAMPLES_BUCKET, key="clips/nope.mp4")))

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "source_not_found"
    assert result.session_id is None
    assert result.video is None
    assert stack.sim.stats()["calls"] == 0


def test_clip_breaking_a_rule_fails_as_video_rejected_before_the_api(stack: Stack) -> None:
    result = stack.result(stack.submit(s3_clip("too_short")))

    assert result.error is not None
    assert result.error.type == "video_rejected"
    assert result.error.retryable is False
    # The worker's pre-flight read the clip and stopped it: no call, no bill.
    assert "duration rule: 1.5 s is outside 2-5.5 s and 7-10.5 s" in result.error.message
    assert result.attempts == 1
    assert stack.sim.stats()["calls"] == 0


def test_a_hosted_clip_breaking_a_rule_fails_before_the_api(stack: Stack, s3_endpoint: str) -> None:
    url = f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/{SAMPLE_CLIPS['fps_25'].filename}"

    result = stack.result(stack.submit(VideoUrl(video_url=url)))

    assert result.error is not None
    assert result.error.type == "video_rejected"
    assert "fps rule: 25 fps is not 24, 30 or 60" in result.error.message
    assert stack.sim.stats()["calls"] == 0


def test_a_hosted_clip_that_is_gone_fails_as_source_not_found(
    stack: Stack, s3_endpoint: str
) -> None:
    url = f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/nope.mp4?X-Amz-Signature=0ddba11"

    result = stack.result(stack.submit(VideoUrl(video_url=url)))

    assert result.error is not None
    assert (result.error.type, result.error.http_status) == ("source_not_found", 404)
    assert "0ddba11" not in result.to_json()
    assert stack.sim.stats()["calls"] == 0


@pytest.mark.parametrize(
    ("answer", "error_type", "api_code", "http_status"),
    [
        ("kling:1002", "auth_failed", 1002, 401),
        ("kling:1103", "auth_failed", 1103, 403),
        ("comet:401", "auth_failed", None, 401),
        ("kling:1101", "account_blocked", 1101, 429),
        ("kling:1304", "account_blocked", 1304, 429),
        ("kling:1201", "request_rejected", 1201, 400),
        ("kling:1301", "request_rejected", 1301, 400),
        ("comet:400", "request_rejected", None, 400),
        ("comet:500:invalid_request", "request_rejected", None, 500),
        ("html", "bad_gateway_answer", None, 200),
        ("redirect", "bad_gateway_answer", None, 302),
        ("empty", "bad_gateway_answer", None, 200),
    ],
)
def test_permanent_answers_fail_with_their_type_after_exactly_one_call(
    stack: Stack, answer: str, error_type: str, api_code: int | None, http_status: int
) -> None:
    stack.sim.set_faults(script=[answer])

    result = stack.result(stack.submit(s3_clip("valid_mp4")))

    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.type, result.error.api_code) == (error_type, api_code)
    assert result.error.http_status == http_status
    assert result.attempts == 1
    assert stack.sim.stats()["calls"] == 1


def test_retryable_failures_are_retried_until_success(stack: Stack) -> None:
    stack.sim.set_faults(script=["kling:1302", "comet:503", "kling:5002"])

    result = stack.result(stack.submit(s3_clip("valid_mp4")))

    assert result.status == "succeeded", result.error
    assert result.attempts == 4
    assert stack.sim.stats()["calls"] == 4


def test_retry_budget_ends_in_upstream_unavailable(stack: Stack) -> None:
    attempts = stack.settings.kling_max_attempts
    stack.sim.set_faults(script=["kling:5001"] * attempts + ["ok"])

    result = stack.result(stack.submit(s3_clip("valid_mp4")))

    assert result.error is not None
    assert result.error.type == "upstream_unavailable"
    assert result.error.retryable is True
    assert result.error.api_code == 5001
    assert result.attempts == attempts
    assert stack.sim.stats()["calls"] == attempts


def test_dropped_connection_is_retried(stack: Stack) -> None:
    stack.sim.set_faults(script=["drop"])

    result = stack.result(stack.submit(s3_clip("valid_mp4")))

    assert result.status == "succeeded", result.error
    assert result.attempts == 2


@pytest.mark.parametrize(
    "job",
    [
        {"job_id": "bad-both", "source": {"kind": "kling", "video_id": "v", "video_url": "x"}},
        {"job_id": "bad-task", "source": {"kind": "kling", "video_id": "v"}},
        {"job_id": "bad-url", "source": {"kind": "url", "video_url": "ftp://host/a.mp4"}},
        {
            "job_id": "bad-meta",
            "source": {"kind": "url", "video_url": "https://h/a.mp4"},
            "metadata": {"blob": "x" * 17_000},
        },
    ],
    ids=["both-inputs", "missing-task-id", "bad-url", "oversized-metadata"],
)
def test_invalid_jobs_fail_as_invalid_job_without_calling_the_api(
    stack: Stack, job: dict[str, object]
) -> None:
    job_id = str(job["job_id"])
    stack.send_raw_task(job_id, job=job)

    result = stack.result(job_id)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "invalid_job"
    assert result.attempts == 0
    assert stack.sim.stats()["calls"] == 0


def test_a_job_under_a_bad_job_id_fails_under_the_task_id(stack: Stack) -> None:
    stack.send_raw_task("task-7", job={"job_id": "has space", "source": {"kind": "url"}})

    result = stack.result("task-7")

    assert result.error is not None
    assert result.error.type == "invalid_job"
    assert "job_id" in result.error.message


def test_many_jobs_each_end_in_exactly_one_result(stack: Stack) -> None:
    names = ["valid_mp4", "valid_mov", "valid_60fps", "in_the_gap", "fps_25"] * 4

    job_ids = [stack.submit(s3_clip(name)) for name in names]
    results = stack.results(job_ids)

    statuses = [results[job_id].status for job_id in job_ids]
    expected = ["failed" if SAMPLE_CLIPS[name].breaks else "succeeded" for name in names]
    assert statuses == expected
    # One call per valid clip; the rule-breakers were stopped before the API.
    assert stack.sim.stats()["calls"] == expected.count("succeeded")
