"""The registry of Kling-generated videos that `video_id` requests may name.

Seeded from a JSON file (a list of objects, the packaged `videos.json` by default) and grown at run
time with `POST /_sim/videos`. Kling accepts only videos generated in the last 30 days.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contract.clip_rules import ClipFacts

#: The packaged demo seed.
DEFAULT_VIDEOS_PATH = Path(__file__).resolve().parent / "videos.json"
#: How old a generated video may be and still be edited.
MAX_VIDEO_AGE = timedelta(days=30)
_FIELDS = {"video_id", "task_id", "duration_ms", "fps", "width", "height", "created_at"}


class VideoError(ValueError):
    """Raised when a video record is malformed."""


@dataclass(frozen=True, slots=True)
class KnownVideo:
    """A video Kling generated: its ids, its clip facts and when it was made (None: at start)."""

    video_id: str
    task_id: str
    duration_ms: int
    fps: int = 30
    width: int = 1280
    height: int = 720
    created_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Any) -> KnownVideo:
        """Build from a JSON object, checking names and types; VideoError when malformed."""
        if not isinstance(data, dict):
            raise VideoError("a video must be a JSON object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise VideoError(f"unknown video fields: {', '.join(unknown)}")
        values = dict(data)
        for name in ("video_id", "task_id"):
            if not isinstance(values.get(name), str) or not values[name]:
                raise VideoError(f"{name} must be a non-empty string")
        for name in ("duration_ms", "fps", "width", "height"):
            value = values.get(name, 0 if name != "duration_ms" else None)
            if name in values and (isinstance(value, bool) or not isinstance(value, int)):
                raise VideoError(f"{name} must be an integer")
        if "duration_ms" not in values:
            raise VideoError("duration_ms is required")
        created = values.get("created_at")
        if created is not None:
            try:
                stamp = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
            except ValueError as exc:
                raise VideoError("created_at must be an ISO 8601 time") from exc
            values["created_at"] = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON."""
        data: dict[str, Any] = {
            "video_id": self.video_id,
            "task_id": self.task_id,
            "duration_ms": self.duration_ms,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
        }
        if self.created_at is not None:
            data["created_at"] = self.created_at.isoformat()
        return data

    def facts(self) -> ClipFacts:
        """The clip facts the answer reports (Kling's clips are MP4)."""
        frames = round(self.duration_ms * self.fps / 1000)
        return ClipFacts("mp4", self.duration_ms, self.width, self.height, float(self.fps), frames)


class VideoRegistry:
    """Known videos by id; videos without `created_at` count as made when the registry started."""

    def __init__(self, videos: list[KnownVideo], started_at: datetime | None = None) -> None:
        self.started_at = started_at or datetime.now(UTC)
        self._videos = {video.video_id: video for video in videos}

    @classmethod
    def from_file(cls, path: Path) -> VideoRegistry:
        """Load a JSON list of videos; VideoError (naming the file) when malformed."""
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VideoError(f"cannot read videos from {path}: {exc}") from exc
        if not isinstance(records, list):
            raise VideoError(f"{path} must hold a JSON list of videos")
        return cls([KnownVideo.from_json(record) for record in records])

    def add(self, video: KnownVideo) -> None:
        """Register (or replace) a video."""
        self._videos[video.video_id] = video

    def get(self, video_id: str) -> KnownVideo | None:
        """The video called `video_id`, if known."""
        return self._videos.get(video_id)

    def is_expired(self, video: KnownVideo, now: datetime | None = None) -> bool:
        """Whether the video is older than Kling's 30-day editing window."""
        created = video.created_at or self.started_at
        return (now or datetime.now(UTC)) - created > MAX_VIDEO_AGE
