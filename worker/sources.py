"""Turning a job's source into the request body of init-selection.

S3 objects are checked (``HeadObject``) and presigned into a GET ``video_url``; botocore errors
are translated into the worker's own: a missing or forbidden object is ``source_not_found``, an
unreachable S3 endpoint is retryable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from contract.jobs import KlingVideo, S3Object, VideoUrl
from contract.settings import Settings
from worker.errors import ConfigurationError, InvalidJob, SourceNotFound, UpstreamDown

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: S3 error codes that mean the object cannot be had with our credentials.
_MISSING_CODES = frozenset(
    {"404", "403", "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "AccessDenied", "Forbidden"}
)


class SourceResolver:
    """Builds the request body for a source; one per worker process (the boto3 client is reused)."""

    def __init__(self, s3: S3Client, *, presign_expires_s: int) -> None:
        self._s3 = s3
        self._presign_expires_s = presign_expires_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceResolver:
        config = Config(
            signature_version="s3v4",
            max_pool_connections=settings.worker_concurrency,
            retries={"max_attempts": 2, "mode": "standard"},
            # Local S3 servers (MinIO, moto) serve buckets on the path, not as subdomains.
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        )
        try:
            s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
        except ValueError as exc:  # botocore's word for an endpoint that is not a URL
            raise ConfigurationError(f"S3_ENDPOINT_URL is not usable: {exc}") from exc
        return cls(s3, presign_expires_s=settings.presign_expires_seconds)

    def request_body(self, source: KlingVideo | S3Object | VideoUrl) -> dict[str, Any]:
        match source:
            case KlingVideo(video_id=video_id, task_id=task_id):
                return {"video_id": video_id, "task_id": task_id}
            case VideoUrl(video_url=video_url):
                return {"video_url": video_url}
            case S3Object():
                return {"video_url": self.presign(source)}
        raise TypeError(f"unknown source {source!r}")  # pragma: no cover - the union is closed

    def presign(self, source: S3Object) -> str:
        """A presigned GET URL for an object that exists and that we may read."""
        params = {"Bucket": source.bucket, "Key": source.key}
        if source.version_id:
            params["VersionId"] = source.version_id
        where = f"s3://{source.bucket}/{source.key}"
        try:
            self._s3.head_object(**params)  # type: ignore[arg-type]
            return self._s3.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self._presign_expires_s
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING_CODES or status in (403, 404):
                raise SourceNotFound(
                    f"{where} cannot be read: {code or status}", http_status=status
                ) from exc
            raise UpstreamDown(
                f"S3 answered {code or status} for {where}", http_status=status
            ) from exc
        except ParamValidationError as exc:
            # botocore refused the request before sending it: the job names no possible object.
            raise InvalidJob(f"{where} is not a valid S3 object: {exc}") from exc
        except BotoCoreError as exc:
            raise UpstreamDown(f"S3 unreachable for {where}: {type(exc).__name__}") from exc
