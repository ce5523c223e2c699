"""How a task run ends for Celery (and so for Flower): SUCCESS with a summary, or FAILURE with the
error type for a failed job, once its result is published."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from celery import states

from contract.names import TASK_NAME
from contract.results import Result, ResultError
from worker.app import _on_task_postrun, app
from worker.errors import JobEndedFailed
from worker.handler import Handled
from worker.ops import metrics
from worker.tasks import report

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def result(error_type: str | None) -> Result:
    error = (
        None
        if error_type is None
        else ResultError(type=error_type, message="s3://uploads/a.mp4: 404", retryable=False)
    )
    return Result(
        job_id="job-1",
        status="failed" if error else "succeeded",
        session_id=None if error else "sess-1",
        session_expires_at=None,
        source=None,
        metadata={},
        video=None,
        kling_request_id=None,
        error=error,
        attempts=1,
        submitted_at=NOW,
        completed_at=NOW,
    )


def test_a_success_returns_its_summary() -> None:
    assert report(Handled(result(None))) == "succeeded, attempts=1"


def test_a_failed_job_raises_its_error_type_alone() -> None:
    with pytest.raises(JobEndedFailed) as raised:
        report(Handled(result("source_not_found")))

    assert str(raised.value) == "source_not_found"
    # The message (which may name the source) stays in the result, not in Celery's state.
    assert "s3://" not in repr(raised.value)
    copied = pickle.loads(pickle.dumps(raised.value))
    assert (type(copied), copied.error_type) == (JobEndedFailed, "source_not_found")


def test_the_task_declares_a_failed_job_an_expected_exception() -> None:
    task = app.tasks[TASK_NAME]

    assert JobEndedFailed in task.throws
    assert task.acks_late
    assert not getattr(task, "autoretry_for", ())


def test_only_runs_that_published_nothing_count_as_publish_failures() -> None:
    before = metrics.PUBLISH_FAILURES._value.get()
    task = SimpleNamespace(name=TASK_NAME)

    _on_task_postrun(sender=task, state=states.FAILURE, retval=JobEndedFailed("video_rejected"))
    assert metrics.PUBLISH_FAILURES._value.get() == before
    _on_task_postrun(sender=task, state=states.FAILURE, retval=RuntimeError("a bug"))
    assert metrics.PUBLISH_FAILURES._value.get() == before + 1
