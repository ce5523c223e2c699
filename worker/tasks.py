"""The ``kling.init_selection`` task: a thin adapter between a Celery message and the pipeline."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import redis
from celery import Task, shared_task
from celery.exceptions import Reject

from producers.jobs import JOB_ID_PATTERN, InvalidJobError, parse_job
from producers.names import TASK_NAME
from producers.results import Result
from worker import metrics
from worker.errors import WorkerStopping
from worker.idempotency import worth_remembering
from worker.pipeline import invalid_job_result, utcnow
from worker.runtime import Runtime

logger = logging.getLogger(__name__)

_JOB_ID = re.compile(JOB_ID_PATTERN)
#: How long a job waits before going back to the queue while the shared store is unreachable.
STORE_OUTAGE_PAUSE_S = 1.0


@shared_task(  # type: ignore[untyped-decorator]
    name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, typing=False
)
def init_selection(self: Task, *args: Any, **kwargs: Any) -> str:
    """Open one editing session and publish the job's terminal result; the message is acked after.

    The signature takes anything: a message with the wrong arguments still gets its
    ``invalid_job`` result instead of a Celery ``TypeError`` that would drop it. The returned
    summary is what Flower shows as the task's result (no result backend stores it).
    """
    runtime: Runtime = self.app.runtime
    received_at = utcnow()
    raw = kwargs.get("job")
    try:
        if args or set(kwargs) != {"job"}:
            raise InvalidJobError("the task takes exactly one keyword argument, 'job'")
        job = parse_job(raw, allow_http=runtime.settings.allow_http_video_urls)
    except InvalidJobError as exc:
        job_id = recover_job_id(raw, self.request.id)
        return finish(runtime, invalid_job_result(job_id, raw, str(exc), received_at=received_at))
    try:
        with runtime.lease.held(job.job_id) as recorded:
            if recorded is not None:
                logger.info("Job %s has a recorded outcome; publishing it again.", job.job_id)
                return finish(runtime, recorded, republished=True)
            result = runtime.pipeline.run(job, received_at=received_at)
            remember(runtime, result)
    except WorkerStopping as exc:
        # Warm shutdown: the call in flight has finished; the retries are another worker's.
        logger.info("Job %s handed back: %s.", job.job_id, exc)
        raise Reject(str(exc), requeue=True) from exc
    except redis.RedisError as exc:
        # The shared store is away and no call has been made: hand the job back, after a
        # pause so that an outage does not spin the queue.
        logger.warning("Job %s handed back: the shared store is unreachable (%s).", job.job_id, exc)
        time.sleep(STORE_OUTAGE_PAUSE_S)
        raise Reject(f"shared store unreachable: {exc}", requeue=True) from exc
    return finish(runtime, result, upstream_latency_s=metrics.take_job_upstream_seconds())


def remember(runtime: Runtime, result: Result) -> None:
    """Record the outcome before it is published, so a redelivered job opens no second session.

    A store outage here must not cost the outcome: it is published all the same, and only a
    resubmission of this ``job_id`` could then call the API again.
    """
    if not worth_remembering(result):
        return
    try:
        runtime.outcomes.record(result)
    except redis.RedisError as exc:
        logger.error("Job %s: outcome not recorded (%s); publishing it anyway.", result.job_id, exc)


def finish(
    runtime: Runtime,
    result: Result,
    *,
    upstream_latency_s: float | None = None,
    republished: bool = False,
) -> str:
    """Publish the job's result, log its outcome line, and summarise it for Flower."""
    publish(runtime, result)
    log_outcome(result, upstream_latency_s=upstream_latency_s, republished=republished)
    error = f" {result.error.type}" if result.error else ""
    again = " (recorded outcome, published again)" if republished else ""
    return f"{result.status}{error}, attempts={result.attempts}{again}"


def publish(runtime: Runtime, result: Result) -> None:
    """Publish ``result``; if the broker will not take it, give the job's message back."""
    try:
        runtime.publisher.publish(result)
    except Exception as exc:
        logger.error("Job %s: result not published (%s); returning the job.", result.job_id, exc)
        # Not acked: the job comes back, and a recorded outcome is published without a new call.
        raise Reject(f"result not published: {exc}", requeue=True) from exc


def recover_job_id(raw: object, task_id: str | None) -> str:
    """The caller's id for a job too broken to parse: its own ``job_id`` if well formed, else the
    task id (which producers set to the ``job_id``)."""
    candidate = raw.get("job_id") if isinstance(raw, dict) else None
    if isinstance(candidate, str) and _JOB_ID.match(candidate):
        return candidate
    return task_id or "unknown"


def log_outcome(
    result: Result, *, upstream_latency_s: float | None = None, republished: bool = False
) -> None:
    """Count the job's outcome and log its one outcome line (a JSON object under LOG_FORMAT=json).

    ``upstream_latency_s`` is the time spent in init-selection calls, every attempt together
    (``None``: no call was made). Nothing here can hold a secret: the source is named by kind.
    """
    error_type = result.error.type if result.error else None
    source = result.source
    source_kind = source.get("kind") if isinstance(source, dict) else getattr(source, "kind", None)
    latency_ms = round(upstream_latency_s * 1000, 1) if upstream_latency_s is not None else None
    metrics.count_job(result.status, error_type)
    logger.info(
        "Job %s %s (source=%s, error=%s, attempts=%d, upstream_ms=%s, kling_request_id=%s).",
        result.job_id,
        result.status,
        source_kind,
        error_type,
        result.attempts,
        latency_ms,
        result.kling_request_id,
        extra={
            "event": "job_outcome",
            "job_id": result.job_id,
            "source_kind": source_kind,
            "status": result.status,
            "error_type": error_type,
            "attempts": result.attempts,
            "upstream_latency_ms": latency_ms,
            "kling_request_id": result.kling_request_id,
            "republished": republished,
        },
    )
