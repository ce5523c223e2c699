"""Counters and the recent-request log behind `GET /_sim/stats` and `GET /_sim/requests`.

Plain in-memory counters touched only from the event loop, so they cost a few dict updates per
call and need no locks.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: How many recent requests `GET /_sim/requests` keeps.
RECENT_REQUESTS = 1000

#: Outcome names in `by_outcome`.
OUTCOMES = (
    "succeeded",
    "clip_rejected",
    "request_rejected",
    "auth_failed",
    "account_blocked",
    "concurrency_limited",
    "fault",
)


def video_key(body: Any) -> str | None:
    """The `calls_per_video` key of a body: its video_id, or its video_url without the query."""
    if not isinstance(body, dict):
        return None
    video_id, video_url = body.get("video_id"), body.get("video_url")
    if isinstance(video_id, str):
        return video_id
    if isinstance(video_url, str):
        parts = urlsplit(video_url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return None


class Stats:
    """What the simulator has seen since start or the last reset."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.sessions_opened = 0
        self.by_outcome: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self.calls_per_video: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)

    def started(self, path: str, authorization: str | None, body: Any) -> None:
        """Count a call as it arrives and remember its request."""
        self.calls += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.recent.append({"path": path, "authorization": authorization, "body": body})
        key = video_key(body)
        if key is not None:
            self.calls_per_video[key] += 1

    def finished(self, outcome: str, code: str) -> None:
        """Count how a call ended; `code` is the Kling code, or `http:<status>` for others."""
        self.in_flight -= 1
        self.by_outcome[outcome] += 1
        self.by_code[code] += 1
        if outcome == "succeeded":
            self.sessions_opened += 1

    def reset(self) -> None:
        """Forget everything except the calls still in flight."""
        in_flight = self.in_flight
        self.__init__()  # type: ignore[misc]
        self.in_flight = self.peak_in_flight = in_flight

    def to_json(self) -> dict[str, Any]:
        """The `GET /_sim/stats` answer."""
        return {
            "calls": self.calls,
            "by_outcome": {name: self.by_outcome.get(name, 0) for name in OUTCOMES},
            "by_code": dict(self.by_code),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "calls_per_video": dict(self.calls_per_video),
            "sessions_opened": self.sessions_opened,
        }
