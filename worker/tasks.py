"""The ``kling.init_selection`` task: a thin adapter between a Celery message and the handler."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject

from contract.names import TASK_NAME
from worker.errors import JobEndedFailed, StoreUnavailable, WorkerStopping
from worker.handler import Handled, JobHandler, PublishFailed

logger = logging.getLogger(__name__)

#: How long a job waits before going back to the queue while the shared store is unreachable.
STORE_OUTAGE_PAUSE_S = 1.0


@shared_task(  # type: ignore[untyped-decorator]
    name=TASK_NAME,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    typing=False,
    # A failed job is an expected ending: logged without a traceback, acked, never retried.
    throws=(JobEndedFailed,),
)
def init_selection(self: Task, *args: Any, **kwargs: Any) -> str:
    """Open one editing session and publish the job's terminal result; the message is acked after.

    The signature takes anything: a message with the wrong arguments still gets its
    ``invalid_job`` result instead of a Celery ``TypeError`` that would drop it. A success
    returns a summary, which Flower shows as the task's result (no result backend stores it); a
    failed job raises :class:`JobEndedFailed` once its result is published (see :func:`report`).
    """
    handler: JobHandler = self.app.runtime.handler
    well_formed = not args and set(kwargs) == {"job"}
    try:
        handled = handler.handle(
            kwargs.get("job"), task_id=self.request.id, well_formed=well_formed
        )
    except WorkerStopping as exc:
        # Warm shutdown: the call in flight has finished; the retries are another worker's.
        logger.info("Job %s handed back: %s.", self.request.id, exc)
        raise Reject(str(exc), requeue=True) from exc
    except StoreUnavailable as exc:
        # No call has been made: hand the job back, after a pause so that an outage does not
        # spin the queue.
        logger.warning("Job %s handed back: %s.", self.request.id, exc)
        time.sleep(STORE_OUTAGE_PAUSE_S)
        raise Reject(str(exc), requeue=True) from exc
    except PublishFailed as exc:
        # Not acked: the job comes back, and a recorded outcome is published without a new call.
        logger.error("Job %s: %s; returning the job.", self.request.id, exc)
        raise Reject(str(exc), requeue=True) from exc
    return report(handled)


def report(handled: Handled) -> str:
    """How the task run ends once the result is published: a success returns its summary; a
    failed job raises :class:`JobEndedFailed` with its error type, so Celery records FAILURE
    (Flower's *Failed* filter, the error type as the exception) instead of SUCCESS."""
    error = handled.result.error
    if error is not None:
        raise JobEndedFailed(error.type)
    return handled.summary()
