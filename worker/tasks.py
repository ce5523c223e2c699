"""The ``kling.init_selection`` task: a thin adapter between a Celery message and the handler."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject, Retry

from contract.names import TASK_NAME
from contract.redaction import redact_url
from contract.topology import LEASE_WAIT_QUEUE
from worker.coordination.outcomes import AnsweredByHolder, FinishFailed, LeaseHeld
from worker.coordination.turns import overdue_job
from worker.errors import JobEndedFailed, StoreUnavailable, WorkerStopping
from worker.handler import Handled, JobHandler, PublishFailed
from worker.pool import is_overdue

logger = logging.getLogger(__name__)

#: How long a job waits before going back to the queue while the shared store is unreachable.
STORE_OUTAGE_PAUSE_S = 1.0
#: Added to the holder's remaining lease before a waiting copy looks again: past a dead holder's
#: lapse, and spread out so hundreds of copies do not all come back in the same instant.
LEASE_WAIT_JITTER_S = (0.2, 1.5)


# max_retries=None: a copy may wait for a live holder many times (one whose retries take
# minutes); each wait is a new message with a countdown, never a thread.
@shared_task(  # type: ignore[untyped-decorator]
    name=TASK_NAME,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    typing=False,
    # Only the lease-wait copies are retried (wait_for_lease); a failed job never is.
    max_retries=None,
    # A failed job is an expected ending: logged without a traceback, acked, never retried.
    throws=(JobEndedFailed,),
    # A revoked or expired job ends in a `cancelled` result instead of being dropped.
    Request="worker.revoked:JobRequest",
)
def init_selection(self: Task, *args: Any, **kwargs: Any) -> str:
    """Open one editing session and publish the job's terminal result; the message is acked after.

    The signature takes anything: a message with the wrong arguments still gets its
    ``invalid_job`` result instead of a Celery ``TypeError`` that would drop it. A success
    returns a summary, which Flower shows as the task's result (no result backend stores it); a
    failed job raises :class:`JobEndedFailed` once its result is published (see :func:`report`).
    """
    handler: JobHandler = self.app.runtime.handler
    # A copy that waited for a lease (most often a dead worker's), or a job the broker handed out
    # again: it may have been answered already, and it takes the next call slot of this process.
    copy = is_overdue(
        {"retries": self.request.retries, "delivery_info": self.request.delivery_info}
    )
    try:
        with overdue_job(copy):
            handled = handler.handle(
                kwargs.get("job"),
                task_id=self.request.id,
                well_formed=not args and set(kwargs) == {"job"},
                copy=copy,
            )
    except LeaseHeld as exc:
        raise wait_for_lease(self, kwargs, exc) from exc
    except AnsweredByHolder as exc:
        # The job's result is out, or another worker that holds its lease now will publish it.
        logger.info("Job %s: %s; this copy is done.", self.request.id, exc)
        return "answered by the worker that held its lease"
    except WorkerStopping as exc:
        # Warm shutdown: the call in flight has finished; the retries are another worker's.
        logger.info("Job %s handed back: %s.", self.request.id, exc)
        raise Reject(str(exc), requeue=True) from exc
    except StoreUnavailable as exc:
        # Hand the job back, after a pause so that an outage does not spin the queue: no call
        # was made, or (FinishFailed) its outcome is not safely stored, and the copy that comes
        # back must find the job unacknowledged.
        level = logging.ERROR if isinstance(exc, FinishFailed) else logging.WARNING
        logger.log(level, "Job %s handed back: %s.", self.request.id, exc)
        time.sleep(STORE_OUTAGE_PAUSE_S)
        raise Reject(str(exc), requeue=True) from exc
    except PublishFailed as exc:
        # Not acked: the job comes back, and a recorded outcome is published without a new call.
        logger.error("Job %s: %s; returning the job.", self.request.id, exc)
        raise Reject(str(exc), requeue=True) from exc
    except Exception as exc:
        # The last resort: whatever else escaped still ends the job in one result.
        logger.error("Job %s failed inside the worker.", self.request.id, exc_info=True)
        handled = last_resort(handler, kwargs, self.request.id, exc)
    return report(handled)


def last_resort(
    handler: JobHandler, kwargs: dict[str, Any], task_id: str, exc: Exception
) -> Handled:
    """The ``internal_error`` result for a job whose handling failed unexpectedly; the job goes
    back (a requeue, not a loop: the broker is the one fault left) if even that cannot go out."""
    try:
        return handler.last_resort(kwargs.get("job"), task_id=task_id, fault=exc)
    except PublishFailed as failure:
        logger.error("Job %s: %s; returning the job.", task_id, failure)
        raise Reject(str(failure), requeue=True) from failure


def report(handled: Handled) -> str:
    """How the task run ends once the result is published: a success returns its summary; a
    failed job raises :class:`JobEndedFailed` with its error type, so Celery records FAILURE
    (Flower's *Failed* filter, the error type as the exception) instead of SUCCESS."""
    error = handled.result.error
    if error is not None:
        raise JobEndedFailed(error.type)
    return handled.summary()


def wait_for_lease(task: Task, kwargs: dict[str, Any], held: LeaseHeld) -> Retry | Reject:
    """Send this copy back to wait while another worker holds the job's lease.

    A Celery retry with a countdown: the copy is published again (same task id, ``retries``
    counted, which tells the next run it waited) and this message acked. It costs no thread
    while it waits (the consumer holds the copy until its time comes, as for any ETA) and does
    not spin the queue: it comes back once, about when the holder's lease would lapse if it
    stopped renewing. A dead holder's lease has lapsed by then and the copy runs the job; a
    live holder's is renewed, and the copy waits again until the holder has published the
    result (then it ends with none of its own). Sleeping in the task instead parks a pool
    thread per copy (a worker that took a dead worker's hundreds of jobs stalled, and ignored
    SIGTERM); an immediate requeue spins. The copy goes to the lease-wait queue, not the back
    of the job queue, so a backlog there does not hold it up.
    """
    delay_s = held.retry_in_s + random.uniform(*LEASE_WAIT_JITTER_S)
    logger.info("Job %s: %s; looking again in %.1f s.", task.request.id, held.message, delay_s)
    try:
        retry: Retry = task.retry(
            countdown=delay_s,
            queue=LEASE_WAIT_QUEUE,
            throw=False,
            argsrepr="()",
            kwargsrepr=shown_kwargs(kwargs),
        )
    except Reject as exc:
        # Celery could not publish the copy and would drop the message: keep it instead.
        return Reject(f"could not send the job back to wait: {exc}", requeue=True)
    return retry


def shown_kwargs(kwargs: dict[str, Any]) -> str:
    """The task's arguments as Flower shows them: a signed URL without its signature (as the
    producers show them)."""
    job = kwargs.get("job")
    if isinstance(job, dict) and isinstance(job.get("source"), dict):
        source = job["source"]
        if isinstance(source.get("video_url"), str):
            job = {**job, "source": {**source, "video_url": redact_url(source["video_url"])}}
    try:
        return json.dumps({"job": job})
    except (TypeError, ValueError):
        return "{...}"
