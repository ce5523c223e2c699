"""The work of one job, free of Celery: resolve the source, call the API, build the result.

Retryable failures are retried here, in the same task run, with backoff; the job's message stays
unacknowledged meanwhile, so a crash hands the whole job to another worker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from contract.jobs import MAX_METADATA_BYTES, Job, metadata_size
from contract.redaction import redact_raw_source, redact_source
from contract.results import Result, ResultError
from worker.backoff import Backoff
from worker.coordination.breaker import TRIPPING_ERRORS, BreakerState
from worker.coordination.limits import CallLimiter, unlimited
from worker.errors import (
    InvalidJob,
    JobFailure,
    RetryableError,
    UpstreamBusy,
    UpstreamUnavailable,
    WorkerStopping,
)
from worker.ops import metrics
from worker.preflight import Preflight, PreflightPass
from worker.sources import SourceResolver
from worker.upstream.answers import OpenedSession
from worker.upstream.client import KlingClient

logger = logging.getLogger(__name__)

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
class Pipeline:
    """Turns a parsed job into its terminal :class:`Result`; a job's own failure is a result too."""

    resolver: SourceResolver
    client: KlingClient
    backoff: Backoff
    max_attempts: int
    breaker: BreakerState
    #: Set when the worker shuts down: a job waiting to retry is handed back instead.
    stopping: threading.Event = field(default_factory=threading.Event)
    #: Fleet-wide concurrency cap, rate and back-off around each call (worker/limits.py).
    limiter: CallLimiter = field(default_factory=unlimited)
    #: Probes ``url`` and ``s3`` clips before the first call (None: ``PREFLIGHT_CLIPS=false``).
    preflight: Preflight | None = None

    def run(self, job: Job, *, received_at: datetime | None = None) -> Ran:
        attempts = 0
        upstream_s: list[float] = []
        checked = PreflightPass()
        try:
            while True:
                attempts += 1
                try:
                    opened = checked.fill(self._attempt(job, upstream_s, checked))
                    result = succeeded(job, opened, attempts=attempts, received_at=received_at)
                    return Ran(result, sum(upstream_s))
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
        except JobFailure as exc:
            result = failed(
                job.job_id,
                exc.to_result_error(),
                source=redact_source(job.source),
                metadata=job.metadata,
                attempts=attempts,
                submitted_at=job.submitted_at or received_at,
            )
            return Ran(result, sum(upstream_s) if upstream_s else None)

    def _attempt(self, job: Job, upstream_s: list[float], checked: PreflightPass) -> OpenedSession:
        """One attempt; the time its call takes is appended to ``upstream_s``."""
        paused = self.breaker.open_error()
        if paused is not None:
            raise paused
        body = self.resolver.request_body(job.source)
        if self.preflight is not None:  # once per job; a clip that breaks a rule stops here
            self.preflight.run_once(job.source, body, checked)
        try:
            with self.limiter.slot():
                started = time.perf_counter()
                try:
                    return self.client.init_selection(body)
                finally:
                    upstream_s.append(time.perf_counter() - started)
        except UpstreamBusy:
            # The whole fleet slows down, rather than each task retrying blindly.
            self.limiter.report_busy()
            raise
        except TRIPPING_ERRORS as exc:
            self.breaker.trip(exc)
            raise


def succeeded(
    job: Job, opened: OpenedSession, *, attempts: int, received_at: datetime | None
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
    try:
        return metadata_size(metadata) <= MAX_METADATA_BYTES
    except (TypeError, ValueError):
        return False
