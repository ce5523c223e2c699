"""Request-body rules of init-selection: a JSON object with exactly one input path.

`parse_body` returns an `InitSelection` or raises `RequestRejected` with the Kling code (1200 not
a JSON object, 1201 a bad field) and a message naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: The fields the body may carry.
ALLOWED_FIELDS = frozenset({"video_id", "task_id", "video_url"})


class RequestRejected(Exception):
    """Raised when the request breaks the API's rules; carries the Kling code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class InitSelection:
    """A valid request: either `video_url`, or `video_id` with `task_id`."""

    video_id: str | None = None
    task_id: str | None = None
    video_url: str | None = None


def decode_json(raw: bytes) -> Any:
    """The parsed body, or RequestRejected(1200) when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRejected(1200, "Invalid request parameters: body is not JSON") from exc


def parse_body(body: Any) -> InitSelection:
    """Validate a decoded body against the init-selection rules."""
    if not isinstance(body, dict):
        raise RequestRejected(1200, "Invalid request parameters: body must be a JSON object")
    for field in body:
        if field not in ALLOWED_FIELDS:
            raise RequestRejected(1201, f"Invalid parameters: unknown field '{field}'")
    for field in ALLOWED_FIELDS & body.keys():
        value = body[field]
        if not isinstance(value, str):
            raise RequestRejected(1201, f"Invalid parameters: '{field}' must be a string")
        if not value.strip():
            raise RequestRejected(1201, f"Invalid parameters: '{field}' must not be empty")
    has_id, has_url = "video_id" in body, "video_url" in body
    if has_id == has_url:
        which = "both" if has_id else "neither"
        raise RequestRejected(
            1201, f"Invalid parameters: give exactly one of 'video_id' and 'video_url', not {which}"
        )
    if has_url:
        if "task_id" in body:
            raise RequestRejected(1201, "Invalid parameters: 'task_id' goes with 'video_id' only")
        url = body["video_url"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RequestRejected(1201, "Invalid parameters: 'video_url' must be an http(s) URL")
        return InitSelection(video_url=url)
    if "task_id" not in body:
        raise RequestRejected(1201, "Invalid parameters: 'task_id' is required with 'video_id'")
    return InitSelection(video_id=body["video_id"], task_id=body["task_id"])
