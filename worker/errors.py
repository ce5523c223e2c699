"""The worker's own error hierarchy; every third-party error is translated into it at the boundary.

::

    KlingWorkerError
    ├── JobFailure                  terminal: the job fails with ``error.type`` = ``error_type``
    │   ├── InvalidJob              invalid_job
    │   ├── SourceNotFound          source_not_found
    │   ├── VideoRejected           video_rejected
    │   ├── RequestRejected         request_rejected
    │   ├── AuthFailed              auth_failed
    │   │   └── TokenNotAccepted    auth_failed, but worth one retry after re-signing the JWT
    │   ├── AccountBlocked          account_blocked
    │   ├── BadGatewayAnswer        bad_gateway_answer
    │   ├── UpstreamUnavailable     upstream_unavailable: a retryable failure past the budget
    │   ├── Cancelled               cancelled: revoked, or expired before a worker took it
    │   └── InternalError           internal_error: whatever else went wrong inside the worker
    ├── JobEndedFailed              a `failed` result is published: the task run ends FAILURE
    ├── WorkerStopping              the worker is shutting down: hand the job back, unfinished
    ├── StoreUnavailable            the fleet's shared store (Redis) did not answer
    ├── ConfigurationError          the worker cannot start with these settings
    └── RetryableError              try again after a backoff
        ├── UpstreamBusy            rate and parallel-task limits (1302, 1303, gateway 429)
        └── UpstreamDown            5xx, timeouts, dropped connections, S3 unreachable
"""

from __future__ import annotations

from typing import ClassVar

from contract.results import Billing, ErrorType, ResultError


class KlingWorkerError(Exception):
    """Root of every error the worker raises on purpose."""

    def __init__(
        self, message: str, *, api_code: int | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.api_code = api_code
        self.http_status = http_status


class JobFailure(KlingWorkerError):
    """Raised when a job has reached a terminal failure; ``error_type`` names it in the result."""

    error_type: ClassVar[ErrorType]
    retryable: ClassVar[bool] = False

    def to_result_error(self) -> ResultError:
        return ResultError(
            type=self.error_type,
            message=self.message,
            retryable=self.retryable,
            api_code=self.api_code,
            http_status=self.http_status,
        )


class InvalidJob(JobFailure):
    """Raised when the message breaks the job contract."""

    error_type = "invalid_job"


class SourceNotFound(JobFailure):
    """Raised when the S3 object is missing or unreadable with the worker's credentials."""

    error_type = "source_not_found"


class VideoRejected(JobFailure):
    """Raised when the clip breaks the API's clip rules (``data.status`` ≠ 0)."""

    error_type = "video_rejected"

    def __init__(
        self,
        message: str,
        *,
        api_code: int | None = None,
        http_status: int | None = None,
        billing: Billing | None = None,
    ) -> None:
        super().__init__(message, api_code=api_code, http_status=http_status)
        #: What the refusing answer said it charged (a selection answer may be billed).
        self.billing = billing


class RequestRejected(JobFailure):
    """Raised when the API refuses the request as invalid."""

    error_type = "request_rejected"


class AuthFailed(JobFailure):
    """Raised when the API refuses our credentials or access."""

    error_type = "auth_failed"


class TokenNotAccepted(AuthFailed):
    """Raised on 1003/1004: the JWT was not yet or no longer valid; re-sign and try once more."""


class AccountBlocked(JobFailure):
    """Raised when billing or account state blocks every call."""

    error_type = "account_blocked"


class BadGatewayAnswer(JobFailure):
    """Raised when a non-5xx answer is not the API's JSON contract: a configuration error."""

    error_type = "bad_gateway_answer"


class UpstreamUnavailable(JobFailure):
    """Raised when retryable failures outlast the retry budget."""

    error_type = "upstream_unavailable"
    # The job failed for good, but the caller may well submit it again later.
    retryable = True


class Cancelled(JobFailure):
    """Raised for a job revoked (Flower, ``celery control revoke``) or expired before it ran."""

    error_type = "cancelled"


class InternalError(JobFailure):
    """A fault inside the worker (a bug, a library error, a value out of range): the job ends
    with it rather than with no result. Its message names the kind of fault, nothing more."""

    error_type = "internal_error"
    retryable = True

    @classmethod
    def of(cls, exc: BaseException) -> InternalError:
        # The exception's text may quote a URL or a body: only its kind is shown.
        return cls(
            f"the worker failed on this job ({type(exc).__name__}); it may be submitted again"
        )


class JobEndedFailed(KlingWorkerError):
    """Raised by the task after a job's ``failed`` result is published, so that Celery records
    the run as FAILURE (Flower's *Failed* filter finds it). Its text is the error type alone.

    The task lists it in ``throws``: Celery logs it without a traceback, acks the message (late
    acks ack failures too) and never retries it. The job's outcome is its published result.
    """

    def __init__(self, error_type: str) -> None:
        super().__init__(error_type)
        self.error_type = error_type

    def __reduce__(self) -> tuple[type[JobEndedFailed], tuple[str]]:
        # Picklable with its one argument (Celery's exception info may copy it).
        return (type(self), (self.error_type,))


class WorkerStopping(KlingWorkerError):
    """Raised instead of waiting out a backoff while the worker shuts down."""


class RetryableError(KlingWorkerError):
    """Raised when the same attempt may succeed after a backoff."""


class UpstreamBusy(RetryableError):
    """Raised on rate or parallel-task limits: the fleet should slow down."""


class UpstreamDown(RetryableError):
    """Raised on 5xx answers, timeouts and connection failures."""


class StoreUnavailable(KlingWorkerError):
    """Raised when the fleet's shared store (``REDIS_URL``) cannot be reached or answered badly."""


class ConfigurationError(KlingWorkerError):
    """Raised at worker start when a setting cannot work (an unreachable store, a bad endpoint)."""
