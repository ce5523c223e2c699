"""One job message from receipt to published result, as plain functions (no Celery here).

The protocol that keeps a ``job_id`` to one session while its outcome is remembered:

1. parse the job; a message that breaks the contract gets its ``invalid_job`` result at once;
2. claim the job: a recorded outcome is published again with no call, else the lease is taken
   (renewed while the job runs); a lease another worker holds is not waited for;
3. run the pipeline, record the outcome (if it is worth remembering), *then* publish it;
4. give the lease back, saying the result is out, so copies that waited for it need none.

Each ending is a :class:`Handled` for the task to report, or an exception for the task:
handing the message back (:class:`~worker.errors.WorkerStopping`,
:class:`~worker.errors.StoreUnavailable`: no call was made, :class:`PublishFailed`), sending it
back to wait (:class:`~worker.coordination.outcomes.LeaseHeld`), or acknowledging it with no
result of its own (:class:`~worker.coordination.outcomes.AnsweredByHolder`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from contract.errors import InvalidJobError
from contract.jobs import JOB_ID_PATTERN, parse_job
from contract.results import Result
from worker.coordination.outcomes import JobLease, OutcomeStore, worth_remembering
from worker.errors import KlingWorkerError, StoreUnavailable
from worker.ops.outcome_log import log_outcome
from worker.pipeline import Pipeline, invalid_job_result, utcnow
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
    outcomes: OutcomeStore
    lease: JobLease
    allow_http: bool

    def handle(
        self, raw: object, *, task_id: str | None, well_formed: bool = True, waited: bool = False
    ) -> Handled:
        """Handle the ``job`` argument of one task message (``well_formed``: it came as the
        only keyword argument, as the contract says; ``waited``: it is a copy sent back to wait
        while another worker held the job's lease)."""
        received_at = utcnow()
        try:
            if not well_formed:
                raise InvalidJobError("the task takes exactly one keyword argument, 'job'")
            job = parse_job(raw, allow_http=self.allow_http)
        except InvalidJobError as exc:
            job_id = recover_job_id(raw, task_id)
            return self.finish(
                Handled(invalid_job_result(job_id, raw, str(exc), received_at=received_at))
            )
        with self.lease.held(job.job_id, waited=waited) as hold:
            if hold.recorded is not None:
                logger.info("Job %s has a recorded outcome; publishing it again.", job.job_id)
                return self.finish(Handled(hold.recorded, republished=True))
            ran = self.pipeline.run(job, received_at=received_at)
            self.remember(ran.result)
            # Published while the lease is held: a copy that waits for it sees either the lease
            # or, once given back, the mark that the result is out (or the recorded outcome).
            handled = self.finish(Handled(ran.result, upstream_s=ran.upstream_s))
            hold.answered = True
            return handled

    def remember(self, result: Result) -> None:
        """Record the outcome before it is published, so a redelivered job opens no second
        session. A store outage here must not cost the outcome: it is published all the same,
        and only a resubmission of this ``job_id`` could then call the API again."""
        if not worth_remembering(result):
            return
        try:
            self.outcomes.record(result)
        except StoreUnavailable as exc:
            logger.error(
                "Job %s: outcome not recorded (%s); publishing it anyway.", result.job_id, exc
            )

    def finish(self, handled: Handled) -> Handled:
        """Publish the result and log the job's one outcome line."""
        try:
            self.publisher.publish(handled.result)
        except Exception as exc:
            raise PublishFailed(f"result not published: {exc}") from exc
        log_outcome(handled.result, upstream_s=handled.upstream_s, republished=handled.republished)
        return handled


def recover_job_id(raw: object, task_id: str | None) -> str:
    """The caller's id for a job too broken to parse: its own ``job_id`` if well formed, else the
    task id (which producers set to the ``job_id``)."""
    candidate = raw.get("job_id") if isinstance(raw, dict) else None
    if isinstance(candidate, str) and _JOB_ID.match(candidate):
        return candidate
    return task_id or "unknown"
