"""The sample clips shipped with the simulator and the facts each one must probe to.

`scripts/make_clips.py` encodes the clips from this table, and the tests and the demo read it,
so the table is the single source of truth for what each clip is and which rule it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Directory holding the clip files (shipped as package data).
CLIPS_DIR = Path(__file__).resolve().parent / "clips"

#: A clip rule, as named in answers and in `simulator.clip_rules`.
RuleName = Literal["container", "duration", "dimensions", "fps"]


@dataclass(frozen=True, slots=True)
class SampleClip:
    """What a sample clip is made of, and which single clip rule it breaks (None: valid)."""

    name: str
    filename: str
    container: Literal["mp4", "mov"] | None
    duration_s: float | None
    width: int | None
    height: int | None
    fps: int | None
    breaks: RuleName | None

    @property
    def total_frames(self) -> int | None:
        """Frames in the clip: duration times rate, both exact for our synthetic clips."""
        if self.duration_s is None or self.fps is None:
            return None
        return round(self.duration_s * self.fps)

    @property
    def duration_ms(self) -> int | None:
        """Duration in milliseconds, the unit of the API's `original_duration`."""
        return None if self.duration_s is None else round(self.duration_s * 1000)


def _clip(
    name: str,
    container: Literal["mp4", "mov"],
    duration_s: float,
    size: tuple[int, int],
    fps: int,
    breaks: RuleName | None = None,
) -> SampleClip:
    return SampleClip(name, f"{name}.{container}", container, duration_s, *size, fps, breaks)


#: Every sample clip by name.
SAMPLE_CLIPS: dict[str, SampleClip] = {
    clip.name: clip
    for clip in (
        _clip("valid_mp4", "mp4", 5.0, (1280, 720), 30),
        _clip("valid_mov", "mov", 8.0, (720, 1280), 24),
        _clip("valid_60fps", "mp4", 3.0, (1280, 720), 60),
        _clip("too_short", "mp4", 1.5, (1280, 720), 30, "duration"),
        _clip("in_the_gap", "mp4", 6.0, (1280, 720), 30, "duration"),
        _clip("too_long", "mp4", 11.0, (1280, 720), 24, "duration"),
        _clip("too_small", "mp4", 3.0, (640, 480), 24, "dimensions"),
        _clip("too_large", "mp4", 3.0, (2240, 1260), 24, "dimensions"),
        _clip("fps_25", "mp4", 3.0, (1280, 720), 25, "fps"),
        SampleClip("not_a_video", "not_a_video.mp4", None, None, None, None, None, "container"),
    )
}

#: Names of the clips that pass every rule.
VALID_CLIPS: tuple[str, ...] = tuple(n for n, c in SAMPLE_CLIPS.items() if c.breaks is None)


def sample_clip_path(name: str) -> Path:
    """Path of the sample clip called `name` (a key of SAMPLE_CLIPS); KeyError if unknown."""
    return CLIPS_DIR / SAMPLE_CLIPS[name].filename
