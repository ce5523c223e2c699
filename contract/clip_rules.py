"""The API's clip rules (docs/kling-api.md), shared by the simulator, which refuses clips with
them, and the worker's pre-flight, which stops clips that break them before any call.

MP4 or MOV; a duration in one of two windows (CometAPI's 2-5.5 s or 7-10.5 s, Kling's own page
2-5 s or 7-10 s); each side 720-2160 px; 24, 30 or 60 fps exactly. Each rule is a function of the
measured value that returns the :class:`BrokenRule` (with a message naming the rule and the value)
or ``None``; :func:`check_clip` applies them in order. Pure code: no I/O, no media library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

#: A clip rule, in the order they are checked.
RuleName = Literal["container", "duration", "dimensions", "fps"]
RULE_NAMES: tuple[RuleName, ...] = ("container", "duration", "dimensions", "fps")

#: Accepted width and height, each, inclusive.
MIN_SIDE_PX, MAX_SIDE_PX = 720, 2160
#: Accepted frame rates.
ALLOWED_FPS: tuple[int, ...] = (24, 30, 60)
#: How far a measured rate may be from an allowed one: exact rates only, so NTSC 29.97 is refused.
FPS_TOLERANCE = 0.01

#: Longest the worker's pre-flight reads one clip (all its ranged GETs together).
PREFLIGHT_TIMEOUT_S = 10.0

#: ISO BMFF major brands counted as MP4; ``qt  `` is QuickTime (MOV).
MP4_BRANDS = frozenset(
    {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V "}
)
#: Top-level boxes a QuickTime file may start with when it has no ``ftyp``.
QUICKTIME_FIRST_BOXES = frozenset({b"moov", b"mdat", b"wide", b"free"})
#: Top-level box types an ISO BMFF file (MP4, MOV, 3GP, fragmented MP4) may start with.
ISO_BMFF_FIRST_BOXES = QUICKTIME_FIRST_BOXES | {
    b"ftyp",
    b"skip",
    b"pnot",
    b"uuid",
    b"junk",
    b"pdin",
    b"styp",
    b"sidx",
    b"moof",
}


@dataclass(frozen=True, slots=True)
class ClipRules:
    """The duration windows of one API (the other rules are the same for both)."""

    name: Literal["cometapi", "kling"]
    #: Accepted durations in milliseconds, both ends inclusive.
    duration_ranges_ms: tuple[tuple[int, int], ...]

    def windows(self) -> str:
        """The windows as a message shows them: ``2-5.5 s and 7-10.5 s``."""
        return " and ".join(f"{lo / 1000:g}-{hi / 1000:g} s" for lo, hi in self.duration_ranges_ms)


COMETAPI_RULES = ClipRules("cometapi", ((2000, 5500), (7000, 10500)))
KLING_RULES = ClipRules("kling", ((2000, 5000), (7000, 10000)))


def rules_for(name: Literal["cometapi", "kling"] | None, base_url: str) -> ClipRules:
    """The rules ``CLIP_RULES`` names; unset: Kling's for a ``*.klingai.com`` base URL, else
    CometAPI's."""
    if name is None:
        host = (urlsplit(base_url).hostname or "").lower()
        name = "kling" if host == "klingai.com" or host.endswith(".klingai.com") else "cometapi"
    return KLING_RULES if name == "kling" else COMETAPI_RULES


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
class BrokenRule:
    """A clip rule a clip breaks, and a message naming the rule and the measured value."""

    rule: RuleName
    message: str


def container_rule(container: str) -> BrokenRule | None:
    """``container`` is ``mp4``, ``mov``, or what the clip is instead (a brand, a format)."""
    if container in ("mp4", "mov"):
        return None
    return BrokenRule("container", f"container rule: {container} is not MP4 or MOV")


def not_a_video(what: str) -> BrokenRule:
    """The container rule, broken by something that is no video at all (``what`` says what)."""
    return BrokenRule("container", f"container rule: {what}, not MP4 or MOV")


def duration_rule(duration_ms: int, rules: ClipRules = COMETAPI_RULES) -> BrokenRule | None:
    if any(low <= duration_ms <= high for low, high in rules.duration_ranges_ms):
        return None
    return BrokenRule(
        "duration", f"duration rule: {duration_ms / 1000:g} s is outside {rules.windows()}"
    )


def dimensions_rule(width: int, height: int) -> BrokenRule | None:
    if all(MIN_SIDE_PX <= side <= MAX_SIDE_PX for side in (width, height)):
        return None
    return BrokenRule(
        "dimensions",
        f"dimensions rule: {width}x{height} has a side outside {MIN_SIDE_PX}-{MAX_SIDE_PX} px",
    )


def fps_rule(fps: float) -> BrokenRule | None:
    if any(abs(fps - allowed) <= FPS_TOLERANCE for allowed in ALLOWED_FPS):
        return None
    return BrokenRule("fps", f"fps rule: {fps:g} fps is not 24, 30 or 60")


def check_clip(facts: ClipFacts, rules: ClipRules = COMETAPI_RULES) -> BrokenRule | None:
    """The first rule ``facts`` breaks, in the order container, duration, dimensions, fps."""
    return (
        container_rule(facts.container)
        or duration_rule(facts.duration_ms, rules)
        or dimensions_rule(facts.width, facts.height)
        or fps_rule(facts.fps)
    )


def container_of(head: bytes) -> str:
    """``mp4`` or ``mov`` from the first bytes' ``ftyp`` brand; otherwise a short name of what
    they are (an unknown brand, or ``unknown``)."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "mov"
        if brand in MP4_BRANDS:
            return "mp4"
        return brand.decode("latin-1").strip() or "unknown"
    if head[4:8] in QUICKTIME_FIRST_BOXES:  # QuickTime files without `ftyp`
        return "mov"
    return "unknown"


def looks_like_iso_bmff(head: bytes) -> bool:
    """Whether the first bytes open an ISO BMFF box (MP4, MOV, 3GP, fragmented MP4)."""
    return head[4:8] in ISO_BMFF_FIRST_BOXES
