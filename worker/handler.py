"""One job message from receipt to published result, as plain functions (no Celery here).

Every message that names a job ends here in exactly one of:

- its result, published once (:class:`Handled`): a success, a typed failure, ``invalid_job``
  for a message that breaks the contract, ``cancelled`` for a revoked or expired job, or
  ``internal_error`` for whatever else went wrong (:meth:`JobHandler.last_resort`);
- no result of its own, because the job's result is out or on its way from another worker
  (:class:`~worker.coordination.outcomes.AnsweredByHolder`, ``TakenOver``);
- an exception that hands the message back unacknowledged, or sends it back to wait:
  :class:`~worker.errors.WorkerStopping`, :class:`~worker.errors.StoreUnavailable` (its
  ``FinishFailed`` too), :class:`PublishFailed`, :class:`~worker.coordination.outcomes.LeaseHeld`.

The steps that keep a ``job_id`` to one session and one result are those of
:mod:`worker.coordination.outcomes`: claim, run, record, publish, finish.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime

from contract.errors import InvalidJobError
from contract.jobs import JOB_ID_PATTERN, Job, parse_job
from contract.redaction import redact_source
from contract.results import Result
from worker.coordination.outcomes import JobLease
from worker.errors import Cancelled, InternalError, KlingWorkerError
from worker.ops.outcome_log import log_outcome
from worker.pipeline import Pipeline, failed, invalid_job_result, utcnow
from worker.publisher import ResultPublisher

logger = logging.getLogger(__name__)

_JOB_ID = re.compile(JOB_ID_PATTERN)


class PublishFailed(KlingWorkerError):
    """Raised when the broker would not take a result: the job's message must go back."""


@dataclass(frozen=True)
class Handled:
    """How a job message ended: its published result, and how it came to be."""

    result: Result
    #: Published again from the recorded outcome, with no call.
    republished: bool = False
    #: Time spent in init-selection calls, every attempt together; ``None``: no call was made.
    upstream_s: float | None = None

    def summary(self) -> str:
        """One line for Flower's result column."""
        error = f" {self.result.error.type}" if self.result.error else ""
        again = " (recorded outcome, published again)" if self.republished else ""
        return f"{self.result.status}{error}, attempts={self.result.attempts}{again}"


@dataclass
class JobHandler:
    """Everything one worker process needs to handle a job message."""

    pipeline: Pipeline
    publisher: ResultPublisher
    lease: JobLease
    allow_http: bool

    def handle(
        self,
        raw: object,
        *,
        task_id: str | None,
        well_formed: bool = True,
        copy: bool = False,
        cancelled: str | None = None,
    ) -> Handled:
        """Handle the ``job`` argument of one task message.

        ``well_formed``: it came as the only keyword argument, as the contract says; ``copy``:
        the message may be a copy of one already answered (redelivered, or sent back to wait
        for a lease); ``cancelled``: why the job must end ``cancelled`` instead of running.
        """
        received_at = utcnow()
        try:
            if not well_formed:
                raise InvalidJobError("the task takes exactly one keyword argument, 'job'")
            job = parse_job(raw, allow_http=self.allow_http)
        except InvalidJobError as exc:
            job_id = recover_job_id(raw, task_id)
            return self.publish(
                Handled(invalid_job_result(job_id, raw, str(exc), received_at=received_at))
            )
        with self.lease.held(job.job_id, copy=copy) as hold:
            if hold.recorded is not None:
                logger.info("Job %s has a recorded outcome; publishing it again.", job.job_id)
                handled = self.publish(Handled(hold.recorded, republished=True))
                if hold.leased:  # it was never published: now it is
                    hold.finish(hold.recorded)
                return handled
            if cancelled is not None:
                result = cancelled_result(job, cancelled, received_at=received_at)
                hold.record(result)
                handled = self.publish(Handled(result))
            else:
                ran = self.pipeline.run(
                    job, received_at=received_at, before_call=hold.ensure_standing
                )
                hold.record(ran.result)
                handled = self.publish(Handled(ran.result, upstream_s=ran.upstream_s))
            hold.finish(handled.result)
            return handled

    def last_resort(self, raw: object, *, task_id: str | None, fault: BaseException) -> Handled:
        """The ``internal_error`` result of a message whose handling failed in a way nothing
        else caught: exactly one result rather than none (echoes left out: they may be what
        failed). Raises :class:`PublishFailed` if even this cannot be published."""
        job_id = recover_job_id(raw, task_id)
        result = failed(
            job_id,
            InternalError.of(fault).to_result_error(),
            source=None,
            metadata={},
            attempts=0,
            submitted_at=None,
        )
        return self.publish(Handled(result))

    def publish(self, handled: Handled) -> Handled:
        """Publish the result and log the job's one outcome line."""
        try:
            self.publisher.publish(handled.result)
        except Exception as exc:
            raise PublishFailed(f"result not published: {type(exc).__name__}: {exc}") from exc
        log_outcome(handled.result, upstream_s=handled.upstream_s, republished=handled.republished)
        return handled


def cancelled_result(job: Job, reason: str, *, received_at: datetime) -> Result:
    """The ``cancelled`` result of a job revoked or expired before it ran (no call made)."""
    return failed(
        job.job_id,
        Cancelled(reason).to_result_error(),
        source=redact_source(job.source),
        metadata=job.metadata,
        attempts=0,
        submitted_at=job.submitted_at or received_at,
    )


def recover_job_id(raw: object, task_id: str | None) -> str:
    """The caller's id for a job too broken to parse: its own ``job_id`` if well formed, else the
    task id (which producers set to the ``job_id``)."""
    candidate = raw.get("job_id") if isinstance(raw, dict) else None
    if isinstance(candidate, str) and _JOB_ID.match(candidate):
        return candidate
    if task_id and _JOB_ID.match(task_id):
        return task_id
    return "unknown"
