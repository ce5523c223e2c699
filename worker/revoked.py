"""Revoked and expired jobs end in one ``cancelled`` result instead of being dropped.

Celery discards a task revoked by id (Flower, ``celery control revoke``) or past its
``expires`` time: it acks the message and publishes nothing. :class:`JobRequest` publishes the
job's ``cancelled`` result first, through the same protocol as any other outcome (so a copy
whose job is running elsewhere, or answered already, adds none), and lets Celery ack after.

Celery keeps revoked ids in memory for hours. A revoke is meant for the job that was waiting
when it was sent: a job submitted again with the same ``job_id`` after the revoke (its
``submitted_at`` is later) runs.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.worker.request import Request
from celery.worker.state import revoked as revoked_ids

from worker.coordination.outcomes import AnsweredByHolder, LeaseHeld
from worker.errors import StoreUnavailable
from worker.handler import PublishFailed

logger = logging.getLogger(__name__)


class JobRequest(Request):  # type: ignore[misc]
    """Celery's request of one ``kling.init_selection`` message, cancelled with a result."""

    def revoked(self) -> bool:
        if not self._already_revoked and self.id in revoked_ids and submitted_after_revoke(self):
            revoked_ids.discard(self.id)
            logger.info("Job %s was submitted again after its revoke: it runs.", self.id)
        return bool(super().revoked())

    def _announce_revoked(self, reason: str, terminated: bool, signum: Any, expired: bool) -> None:
        if not terminated:
            publish_cancelled(self, "expired before a worker took it" if expired else "revoked")
        super()._announce_revoked(reason, terminated, signum, expired)


def publish_cancelled(request: Request, why: str) -> None:
    """Publish the ``cancelled`` result of ``request``'s job, unless its result is out or on its
    way from another worker. Celery acks the message next, whatever happens here."""
    handler = request.task.app.runtime.handler
    job = _job_of(request)
    try:
        handler.handle(job, task_id=request.id, copy=True, cancelled=f"the job was {why}")
    except (AnsweredByHolder, LeaseHeld) as exc:
        logger.info("Job %s %s: %s; no result of its own.", request.id, why, exc)
    except (StoreUnavailable, PublishFailed) as exc:
        logger.error(
            "Job %s %s, but its cancelled result could not be published: %s", request.id, why, exc
        )


def submitted_after_revoke(request: Request) -> bool:
    """Whether the job was submitted after its id was revoked (a resubmission, not the job the
    revoke meant). ``False`` when either time is unknown."""
    entry = getattr(revoked_ids, "_data", {}).get(request.id)
    job = _job_of(request)
    submitted = job.get("submitted_at") if isinstance(job, dict) else None
    if not entry or not isinstance(submitted, str):
        return False
    try:
        submitted_at = datetime.fromisoformat(submitted)
        revoked_at = _wall_time(float(entry[0]))
    except (ValueError, TypeError, OverflowError):
        return False
    return submitted_at.tzinfo is not None and submitted_at > revoked_at


def _wall_time(stamp: float) -> datetime:
    """Celery stamps revoked ids with the monotonic clock: the same moment on the wall clock."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - stamp)


def _job_of(request: Request) -> object:
    kwargs = request.kwargs
    return kwargs.get("job") if isinstance(kwargs, dict) else None
