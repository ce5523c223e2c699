"""The job message (CONTRACT.md, "A job"): validated, immutable models.

A job is the keyword argument ``job`` of a ``kling.init_selection`` Celery task. Producers build
these models; workers parse incoming jobs with :func:`parse_job`, which raises
:class:`InvalidJobError` with a readable reason when the message breaks the contract.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from contract.bounded_json import MAX_DEPTH, depth_exceeds
from contract.errors import InvalidJobError

#: Largest ``metadata`` object, serialized as compact JSON.
MAX_METADATA_BYTES = 16 * 1024
#: Characters a ``job_id`` may hold (1-128 of them).
JOB_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
#: Characters an account name may hold (1-64 of them): it appears in results, logs, metrics
#: and the fleet's Redis keys.
ACCOUNT_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"

_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[?[0-9A-Fa-f:.]+\]?)$")

JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
AccountName = Annotated[str, Field(pattern=ACCOUNT_NAME_PATTERN)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=1024)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class KlingVideo(_Frozen):
    """A clip Kling generated: its ``video_id`` and the ``task_id`` of the generation task."""

    kind: Literal["kling"] = "kling"
    video_id: NonEmpty
    task_id: NonEmpty


class S3Object(_Frozen):
    """An S3 object the worker presigns into a GET ``video_url``."""

    kind: Literal["s3"] = "s3"
    #: The characters S3 (and botocore, before any request) accept in a bucket name.
    bucket: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{3,63}$")]
    key: NonEmpty
    version_id: NonEmpty | None = None

    @classmethod
    def from_uri(cls, uri: str) -> S3Object:
        """``s3://bucket/key`` → :class:`S3Object`."""
        # Split by hand: S3 keys may hold '?' and '#', which a URL parser would cut off.
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket or not key:
            raise InvalidJobError(f"expected s3://BUCKET/KEY, got {uri!r}")
        try:
            return cls(bucket=bucket, key=key)
        except ValueError as exc:
            raise InvalidJobError(f"{uri!r} is not a valid S3 object: {exc}") from None


class VideoUrl(_Frozen):
    """A hosted MP4/MOV clip Kling can download (``https``; ``http`` only when allowed)."""

    kind: Literal["url"] = "url"
    video_url: Annotated[str, Field(min_length=1, max_length=4096)]

    @field_validator("video_url")
    @classmethod
    def _absolute_web_url(cls, url: str, info: ValidationInfo) -> str:
        parts = urlsplit(url)
        # Built directly, a source takes any web URL; :func:`parse_job` (which every producer
        # and worker goes through) applies ALLOW_HTTP_VIDEO_URLS.
        allow_http = info.context is None or bool(info.context.get("allow_http"))
        allowed = ("https", "http") if allow_http else ("https",)
        if parts.scheme not in allowed or not parts.hostname:
            hint = "" if allow_http else " (http needs ALLOW_HTTP_VIDEO_URLS)"
            raise ValueError(f"video_url must be an absolute {' or '.join(allowed)} URL{hint}")
        try:
            parts.port  # noqa: B018 - raises on a port that cannot exist
        except ValueError:
            raise ValueError("video_url has an impossible port") from None
        if not _HOST.match(parts.hostname):
            raise ValueError(f"video_url host {parts.hostname!r} is not a valid host name")
        return url


Source = Annotated[KlingVideo | S3Object | VideoUrl, Field(discriminator="kind")]


class Job(_Frozen):
    """One init-selection job, exactly as it travels on the wire."""

    job_id: JobId
    source: Source
    metadata: dict[str, Any] = Field(default_factory=dict)
    submitted_at: datetime | None = None
    #: The Kling account that must open this session (docs/contract.md, "Accounts").
    account: AccountName | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_fits(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        size = metadata_size(metadata)
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {size} bytes serialized; the limit is {MAX_METADATA_BYTES}"
            )
        return metadata

    @field_validator("submitted_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("submitted_at must carry a time zone (RFC 3339)")
        return value

    def to_wire(self) -> dict[str, Any]:
        """The JSON object a producer sends as the task's ``job`` keyword.

        ``account`` is left out when unset, so a job without one is the same message a worker
        that predates accounts accepts.
        """
        return self.model_dump(mode="json", exclude={"account"} if self.account is None else None)


def metadata_size(metadata: dict[str, Any]) -> int:
    """Bytes of ``metadata`` as compact UTF-8 JSON: the measure of the 16 KiB limit."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())


def new_job_id() -> str:
    """A fresh job id for callers that bring none (a UUID4, as the contract says)."""
    return str(uuid.uuid4())


def make_job(
    source: KlingVideo | S3Object | VideoUrl,
    *,
    job_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    account: str | None = None,
    allow_http: bool = False,
) -> Job:
    """Build and validate a job the way producers do (fresh id and ``submitted_at``)."""
    return complete_job(
        {
            "source": source.model_dump(),
            "job_id": job_id,
            "metadata": metadata,
            "account": account,
        },
        allow_http=allow_http,
    )


def complete_job(data: Mapping[str, Any], *, allow_http: bool = False) -> Job:
    """Validate a job object a caller wrote, filling in what the contract lets them leave out:
    ``job_id`` (a UUID4), ``metadata`` (``{}``) and ``submitted_at`` (now)."""
    defaults = {
        "job_id": new_job_id(),
        "metadata": {},
        "submitted_at": datetime.now(UTC).isoformat(),
    }
    given = {key: value for key, value in data.items() if value is not None}
    return parse_job({**defaults, **given}, allow_http=allow_http)


def parse_job(data: object, *, allow_http: bool = False) -> Job:
    """Validate a decoded JSON job; :class:`InvalidJobError` says what is wrong."""
    if depth_exceeds(data, MAX_DEPTH):
        # Refused before anything recurses into it (json and pydantic would give up deeper).
        raise InvalidJobError(f"job nests deeper than {MAX_DEPTH} levels")
    try:
        # JSON mode: timestamps arrive as strings, everything else keeps strict JSON types.
        text = json.dumps(data, allow_nan=False)
        return Job.model_validate_json(text, context={"allow_http": allow_http})
    except (TypeError, ValueError) as exc:
        raise InvalidJobError(_describe(exc)) from None


def _describe(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return f"job is not a JSON object: {exc}"
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "job"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
