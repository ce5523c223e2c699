"""The ``kling.init_selection`` task: a thin adapter between a Celery message and the pipeline."""

from __future__ import annotations

import logging
import re
from typing import Any

from celery import Task, shared_task

from producers.jobs import JOB_ID_PATTERN, InvalidJobError, parse_job
from producers.names import TASK_NAME
from producers.results import Result
from worker.pipeline import invalid_job_result, utcnow

logger = logging.getLogger(__name__)

_JOB_ID = re.compile(JOB_ID_PATTERN)


@shared_task(  # type: ignore[untyped-decorator]
    name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, typing=False
)
def init_selection(self: Task, *args: Any, **kwargs: Any) -> None:
    """Open one editing session and publish the job's terminal result; the message is acked after.

    The signature takes anything: a message with the wrong arguments still gets its
    ``invalid_job`` result instead of a Celery ``TypeError`` that would drop it.
    """
    runtime = self.app.runtime
    received_at = utcnow()
    raw = kwargs.get("job")
    try:
        if args or set(kwargs) != {"job"}:
            raise InvalidJobError("the task takes exactly one keyword argument, 'job'")
        job = parse_job(raw, allow_http=runtime.settings.allow_http_video_urls)
        result = runtime.pipeline.run(job, received_at=received_at)
    except InvalidJobError as exc:
        job_id = recover_job_id(raw, self.request.id)
        result = invalid_job_result(job_id, raw, str(exc), received_at=received_at)
    runtime.publisher.publish(result)
    log_outcome(result)


def recover_job_id(raw: object, task_id: str | None) -> str:
    """The caller's id for a job too broken to parse: its own ``job_id`` if well formed, else the
    task id (which producers set to the ``job_id``)."""
    candidate = raw.get("job_id") if isinstance(raw, dict) else None
    if isinstance(candidate, str) and _JOB_ID.match(candidate):
        return candidate
    return task_id or "unknown"


def log_outcome(result: Result) -> None:
    error = result.error
    logger.info(
        "Job %s %s (attempts=%d, error=%s, kling_request_id=%s).",
        result.job_id,
        result.status,
        result.attempts,
        error.type if error else None,
        result.kling_request_id,
    )
