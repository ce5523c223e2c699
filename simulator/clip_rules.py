"""The API's clip rules and the `data.status` value each broken rule answers with.

The rules are CometAPI's figures (kling-api.md): MP4 or MOV; 2-5.5 s or 7-10.5 s; each side
720-2160 px; 24, 30 or 60 fps. Kling does not document its `data.status` values, so ours are
our own, one per rule, stable and documented in docs/simulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: `data.status` of an accepted clip.
STATUS_OK = 0
#: `data.status` per broken rule (`container` also covers "not a video at all").
RULE_STATUS: dict[str, int] = {"container": 1, "duration": 2, "dimensions": 3, "fps": 4}

#: Accepted durations in milliseconds, both ends inclusive.
DURATION_RANGES_MS: tuple[tuple[int, int], ...] = ((2000, 5500), (7000, 10500))
#: Accepted width and height, each, inclusive.
MIN_SIDE_PX, MAX_SIDE_PX = 720, 2160
#: Accepted frame rates.
ALLOWED_FPS: tuple[int, ...] = (24, 30, 60)
#: How far a measured rate may be from an allowed one: exact rates only, so NTSC 29.97 is refused.
FPS_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class ClipFacts:
    """What a probe (or the known-video registry) says about a clip."""

    container: Literal["mp4", "mov"] | str
    duration_ms: int
    width: int
    height: int
    fps: float
    total_frames: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """A broken clip rule: the `data.status` to answer and a message naming the rule."""

    rule: str
    status: int
    message: str


def reject(rule: str, message: str) -> Rejection:
    """A Rejection for `rule` (a key of RULE_STATUS)."""
    return Rejection(rule, RULE_STATUS[rule], message)


def check_clip(facts: ClipFacts) -> Rejection | None:
    """The first rule `facts` breaks, in the order container, duration, dimensions, fps."""
    if facts.container not in ("mp4", "mov"):
        return reject("container", f"container rule: {facts.container} is not MP4 or MOV")
    if not any(low <= facts.duration_ms <= high for low, high in DURATION_RANGES_MS):
        return reject(
            "duration",
            f"duration rule: {facts.duration_ms / 1000:g} s is outside 2-5.5 s and 7-10.5 s",
        )
    sides = (facts.width, facts.height)
    if not all(MIN_SIDE_PX <= side <= MAX_SIDE_PX for side in sides):
        return reject(
            "dimensions",
            f"dimensions rule: {facts.width}x{facts.height} has a side outside 720-2160 px",
        )
    if not any(abs(facts.fps - allowed) <= FPS_TOLERANCE for allowed in ALLOWED_FPS):
        return reject("fps", f"fps rule: {facts.fps:g} fps is not 24, 30 or 60")
    return None
