"""Messages production brings that the contract's happy paths do not: each still ends in
exactly one result, and none harms the jobs after it (on RabbitMQ and on Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contract.jobs import new_job_id
from contract.names import TASK_NAME
from producers import KlingVideo, Producer
from tests.integration.stack import Stack

KLING_VIDEO = {"kind": "kling", "video_id": "v-hostile", "task_id": "t-hostile"}


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def known_clip(stack: Stack) -> KlingVideo:
    stack.sim.add_video("v-hostile", "t-hostile", duration_ms=5000)
    return KlingVideo(video_id="v-hostile", task_id="t-hostile")


def test_metadata_nested_260_deep_gets_one_result_and_the_jobs_after_it_theirs(
    stack: Stack,
) -> None:
    # Its invalid_job result could not be serialized: the job looped, and the failed publish
    # left the shared result producer broken for every other job of the worker.
    clip = known_clip(stack)
    stack.send_raw_task("deep-meta", job={"job_id": "deep-meta", "source": KLING_VIDEO,
                                          "metadata": nested(260)})  # fmt: skip
    with Producer(stack.settings) as producer:
        after = [producer.submit(clip) for _ in range(3)]

    results = stack.results(["deep-meta", *after])

    deep = results["deep-meta"]
    assert deep.error is not None
    assert deep.error.type == "invalid_job"
    assert "deeper than 64 levels" in deep.error.message
    assert deep.metadata == {}
    assert all(results[job_id].status == "succeeded" for job_id in after)


def test_an_s3_bucket_name_s3_cannot_hold_is_an_invalid_job_with_no_retry(stack: Stack) -> None:
    # botocore refused it before any request; it was read as "S3 unreachable" and retried.
    source = {"kind": "s3", "bucket": "bad bucket!", "key": "clips/a.mp4", "version_id": None}
    stack.send_raw_task("bad-bucket", job={"job_id": "bad-bucket", "source": source})

    result = stack.result("bad-bucket")

    assert result.error is not None
    assert result.error.type == "invalid_job"
    assert result.error.retryable is False
    assert result.attempts == 0


def test_a_job_whose_expires_has_passed_is_cancelled_with_no_call(stack: Stack) -> None:
    known_clip(stack)
    job = {"job_id": "expired", "source": KLING_VIDEO, "metadata": {"upload": 7}}
    stack.app.send_task(
        TASK_NAME, kwargs={"job": job}, task_id="expired",
        expires=datetime.now(UTC) - timedelta(seconds=5),
    )  # fmt: skip

    result = stack.result("expired")

    assert result.error is not None
    assert result.error.type == "cancelled"
    assert "expired" in result.error.message
    assert result.metadata == {"upload": 7}
    assert stack.sim.stats()["calls"] == 0


def test_a_revoked_job_is_cancelled_and_a_resubmission_after_the_revoke_runs(
    stack: Stack,
) -> None:
    clip = known_clip(stack)
    job_id = new_job_id()
    # Given a job made before its id was revoked (as one waiting on the queue)
    made_at = datetime.now(UTC) - timedelta(minutes=1)
    stack.app.control.revoke(job_id)
    stack.app.control.ping(timeout=2.0)  # the worker has the revoke before the job
    job = {"job_id": job_id, "source": KLING_VIDEO, "submitted_at": made_at.isoformat()}
    stack.send_raw_task(job_id, job=job)

    # Then it ends in one cancelled result, with no call
    cancelled = stack.result(job_id)
    assert cancelled.error is not None
    assert cancelled.error.type == "cancelled"
    assert "revoked" in cancelled.error.message
    assert stack.sim.stats()["calls"] == 0

    # And the same job_id submitted again afterwards runs (Celery remembers revoked ids for
    # hours; the revoke meant the job that was waiting then)
    with Producer(stack.settings) as producer:
        producer.submit(clip, job_id=job_id)
    again = stack.result(job_id)
    assert again.status == "succeeded"
    assert stack.sim.stats()["calls"] == 1
