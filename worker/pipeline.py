"""The work of one job, free of Celery: resolve the source, call the API, build the result.

Retryable failures are retried here, in the same task run, with backoff; the job's message stays
unacknowledged meanwhile, so a crash hands the whole job to another worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from contract.bounded_json import MAX_DEPTH, depth_exceeds
from contract.jobs import MAX_METADATA_BYTES, Job, VideoUrl, metadata_size
from contract.redaction import redact_raw_source, redact_source
from contract.results import Billing, Result, ResultError
from worker.backoff import Backoff
from worker.coordination.accounts import AccountPool
from worker.coordination.breaker import TRIPPING_ERRORS
from worker.coordination.outcomes import AnsweredByHolder
from worker.errors import (
    InternalError,
    InvalidJob,
    JobFailure,
    RetryableError,
    StoreUnavailable,
    UpstreamUnavailable,
    VideoRejected,
    WorkerStopping,
)
from worker.ops import metrics
from worker.preflight import Preflight, PreflightPass, ensure_public_host
from worker.sources import SourceResolver
from worker.upstream.answers import OpenedSession

logger = logging.getLogger(__name__)

#: What leaves :meth:`Pipeline.run` unfinished: the job goes back to the broker, or to another
#: worker that holds its lease now.
UNFINISHED = (WorkerStopping, StoreUnavailable, AnsweredByHolder)

#: How long an editing session stays usable after init-selection (kling-api.md).
SESSION_LIFETIME = timedelta(hours=24)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Ran:
    """A job's terminal result, and the time its init-selection calls took."""

    result: Result
    #: Every attempt's call together; ``None`` when no call was made.
    upstream_s: float | None = None


@dataclass
class Calls:
    """The calls of one job so far: how long each took, and the account of the latest."""

    seconds: list[float] = field(default_factory=list)
    account: str | None = None


@dataclass
class Pipeline:
    """Turns a parsed job into its terminal :class:`Result`; a job's own failure is a result too."""

    resolver: SourceResolver
    #: The Kling accounts: each with its client, breaker and fleet-wide limiter.
    accounts: AccountPool
    backoff: Backoff
    max_attempts: int
    #: Set when the worker shuts down: a job waiting to retry is handed back instead.
    stopping: threading.Event = field(default_factory=threading.Event)
    #: Probes ``url`` and ``s3`` clips before the first call (None: ``PREFLIGHT_CLIPS=false``).
    preflight: Preflight | None = None
    #: ``url`` jobs must name public hosts (``ALLOW_PRIVATE_VIDEO_HOSTS`` off): the pre-flight
    #: checks the address it connects to; without it, the host is looked up here.
    public_url_hosts: bool = False

    def run(
        self,
        job: Job,
        *,
        received_at: datetime | None = None,
        before_call: Callable[[], None] = lambda: None,
    ) -> Ran:
        """The job's terminal result. ``before_call`` runs before each call is made, and may
        raise to stop the job first (the job's lease is in doubt).

        Only the exceptions that hand the job back unfinished leave here (the worker stops, the
        shared store is away, the lease is lost): anything else, a bug or a library's error
        included, ends the job with an ``internal_error`` result.
        """
        attempts = 0
        calls = Calls()
        checked = PreflightPass()
        try:
            self.accounts.check(job)
            if (
                self.public_url_hosts
                and self.preflight is None
                and isinstance(job.source, VideoUrl)
            ):
                ensure_public_host(job.source.video_url)
            while True:
                attempts += 1
                calls_before = len(calls.seconds)
                try:
                    opened = checked.fill(self._attempt(job, calls, checked, before_call))
                    result = succeeded(
                        job,
                        opened,
                        attempts=attempts,
                        received_at=received_at,
                        account=calls.account,
                    )
                    return Ran(result, sum(calls.seconds))
                except TRIPPING_ERRORS as exc:
                    # The account that refused is paused now; another one may take an unpinned
                    # job at once. (No call made: every account it may use is paused.)
                    refused = len(calls.seconds) > calls_before
                    if (
                        not refused
                        or attempts >= self.max_attempts
                        or not self.accounts.may_fail_over(job)
                    ):
                        raise
                    logger.warning(
                        "Job %s attempt %d failed on account %s (%s); trying another account.",
                        job.job_id,
                        attempts,
                        calls.account,
                        exc.message,
                    )
                except RetryableError as exc:
                    if attempts >= self.max_attempts:
                        raise UpstreamUnavailable(
                            f"still failing after {attempts} attempts: {exc.message}",
                            api_code=exc.api_code,
                            http_status=exc.http_status,
                        ) from exc
                    delay = self.backoff.delay(attempts)
                    metrics.count_retry(exc)
                    logger.warning(
                        "Job %s attempt %d failed (%s); retrying in %.2f s.",
                        job.job_id,
                        attempts,
                        exc.message,
                        delay,
                    )
                    if self.stopping.wait(delay):
                        raise WorkerStopping(
                            f"worker stopping before retry {attempts + 1}"
                        ) from exc
        except UNFINISHED:
            raise
        except Exception as exc:
            failure = exc if isinstance(exc, JobFailure) else _internal(job, exc)
            result = failed(
                job.job_id,
                failure.to_result_error(),
                source=redact_source(job.source),
                metadata=job.metadata,
                attempts=attempts,
                submitted_at=job.submitted_at or received_at,
                account=calls.account,
                billing=failure.billing if isinstance(failure, VideoRejected) else None,
            )
            return Ran(result, sum(calls.seconds) if calls.seconds else None)

    def _attempt(
        self, job: Job, calls: Calls, checked: PreflightPass, before_call: Callable[[], None]
    ) -> OpenedSession:
        """One attempt on the account chosen for it (a paused account raises its error)."""
        body = self.resolver.request_body(job.source)
        if self.preflight is not None:  # once per job; a clip that breaks a rule stops here
            self.preflight.run_once(job.source, body, checked)
        with self.accounts.reserve(job) as account:
            try:
                return account.init_selection(body, before_call=before_call)
            finally:
                if account.call_s is not None:
                    calls.seconds.append(account.call_s)
                    calls.account = account.name


def _internal(job: Job, exc: Exception) -> InternalError:
    # The last-resort boundary of a job that ran: one result, never a silent ack.
    logger.error("Job %s failed inside the worker.", job.job_id, exc_info=True)
    return InternalError.of(exc)


def succeeded(
    job: Job,
    opened: OpenedSession,
    *,
    attempts: int,
    received_at: datetime | None,
    account: str | None = None,
) -> Result:
    completed_at = utcnow()
    return Result(
        job_id=job.job_id,
        status="succeeded",
        session_id=opened.session_id,
        session_expires_at=completed_at + SESSION_LIFETIME,
        source=redact_source(job.source),
        metadata=job.metadata,
        video=opened.video,
        kling_request_id=opened.request_id,
        account=account,
        billing=opened.billing,
        error=None,
        attempts=attempts,
        submitted_at=job.submitted_at or received_at,
        completed_at=completed_at,
    )


def failed(
    job_id: str,
    error: ResultError,
    *,
    source: Any,
    metadata: dict[str, Any],
    attempts: int,
    submitted_at: datetime | None,
    account: str | None = None,
    billing: Billing | None = None,
) -> Result:
    return Result(
        job_id=job_id,
        status="failed",
        session_id=None,
        session_expires_at=None,
        source=source,
        metadata=metadata,
        video=None,
        kling_request_id=None,
        account=account,
        billing=billing,
        error=error,
        attempts=attempts,
        submitted_at=submitted_at,
        completed_at=utcnow(),
    )


def invalid_job_result(job_id: str, raw: object, reason: str, *, received_at: datetime) -> Result:
    """The ``invalid_job`` result for a message that names a job but breaks the contract.

    The echo keeps what the caller sent where it is the right shape, so they can match it up.
    """
    raw_dict = raw if isinstance(raw, dict) else {}
    source = raw_dict.get("source")
    metadata = raw_dict.get("metadata")
    return failed(
        job_id,
        InvalidJob(reason).to_result_error(),
        source=redact_raw_source(source) if isinstance(source, dict) else None,
        metadata=metadata if isinstance(metadata, dict) and _small(metadata) else {},
        attempts=0,
        submitted_at=received_at,
    )


def _small(metadata: dict[str, Any]) -> bool:
    """Whether a broken job's ``metadata`` can be echoed: within the contract's size, and
    shallow enough to sit inside a result."""
    if depth_exceeds(metadata, MAX_DEPTH - 1):
        return False
    try:
        return metadata_size(metadata) <= MAX_METADATA_BYTES
    except (TypeError, ValueError):
        return False
