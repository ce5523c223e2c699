"""The result message (CONTRACT.md, "A result") and a consumer for result queues."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, field_validator

from contract.jobs import Source

Status = Literal["succeeded", "failed"]
ErrorType = Literal[
    "invalid_job",
    "source_not_found",
    "video_rejected",
    "request_rejected",
    "auth_failed",
    "account_blocked",
    "upstream_unavailable",
    "bad_gateway_answer",
    "cancelled",
    "internal_error",
]


_ERROR_TYPES = frozenset(get_args(ErrorType))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResultError(_Frozen):
    """Why a job failed, typed so callers can decide what to do."""

    type: ErrorType
    message: str
    retryable: bool
    api_code: int | None = None
    http_status: int | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> object:
        # The contract lets error types grow: one this consumer does not know reads as
        # internal_error, so an older consumer keeps reading a newer fleet's results.
        return value if value in _ERROR_TYPES or not isinstance(value, str) else "internal_error"


class VideoFacts(_Frozen):
    """What the API reported of the clip; each field ``None`` when absent."""

    fps: float | None = None
    duration_ms: int | None = None
    width: int | None = None
    height: int | None = None
    total_frames: int | None = None
    normalized_video_url: str | None = None


class Billing(_Frozen):
    """What an answer said its call charged; each figure ``None`` when the answer left it out."""

    #: ``data.final_unit_deduction``.
    units: float | None = None
    #: ``data.final_balance_deduction.quota``.
    quota: float | None = None
    #: ``data.final_balance_deduction.list_price``.
    list_price: float | None = None


class Result(_Frozen):
    """The one terminal outcome of a job, as published to ``kling.results``."""

    job_id: str
    status: Status
    session_id: str | None
    session_expires_at: datetime | None
    # ``source`` echoes the job; for a job too broken to parse it is whatever was sent.
    source: Source | dict[str, Any] | None
    metadata: dict[str, Any]
    video: VideoFacts | None
    kling_request_id: str | None
    # Defaults: outcomes recorded before accounts existed are still read and published again.
    #: The account whose call produced this result (its session lives there); ``None``: no call.
    account: str | None = None
    billing: Billing | None = None
    error: ResultError | None
    attempts: int
    submitted_at: datetime | None
    completed_at: datetime

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def to_wire(self) -> dict[str, Any]:
        """The JSON body CONTRACT.md shows, key for key."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)
