"""What PyAV can tell of a clip from the few boxes it reads, and the rules it certainly breaks.

PyAV (FFmpeg's demuxers) reads the container header: for MP4/MOV the ``moov`` box, wherever it
is, which holds the duration, the frame count, the size and the timing of every frame, and then
the first packet or so to settle the codec. Nothing is decoded beyond that.

A rule is broken only when *every* reading of its value breaks it: the video track's duration and
the container's (an audio track may be longer), the coded size and the displayed one (anamorphic
pixels), and no frame-rate verdict at all for a variable frame rate (or an unknown average),
whose average is reported but may be measured otherwise by the API. What the probe cannot read
is left to the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av

from contract.clip_rules import (
    FPS_TOLERANCE,
    BrokenRule,
    ClipRules,
    container_of,
    container_rule,
    dimensions_rule,
    duration_rule,
    fps_rule,
    looks_like_iso_bmff,
    not_a_video,
)
from contract.results import VideoFacts
from worker.preflight.boxes import lacks_moov
from worker.preflight.reader import ClipReader

#: FFmpeg's name of its MP4/MOV (ISO BMFF) demuxer, as a container's ``format.name`` lists it.
_ISO_BMFF_DEMUXER = "mov"
#: Settle the stream parameters on as little media data as FFmpeg allows, and decode nothing:
#: the size comes from the codec's headers, the timing from the container (a decoded frame
#: would cost 5-20 ms of CPU and tell nothing the rules need).
_OPEN_OPTIONS = {
    "probesize": "32",
    "analyzeduration": "1",
    "fpsprobesize": "1",
    "skip_frame": "all",
    "threads": "1",
}
#: An MP4/MOV whose boxes hold no ``moov``: no reader (the API's included) can play it.
NO_MOOV = BrokenRule(
    "container",
    "container rule: the MP4 has no moov box: the file is truncated or not a complete MP4",
)


@dataclass(frozen=True, slots=True)
class Measurement:
    """Every reading of each value a clip rule looks at; the first of each is the one reported.

    An empty tuple (or ``container`` None: an ISO BMFF brand that is neither MP4's nor MOV's)
    means the probe could not tell, and that rule is left to the API.
    """

    container: str | None
    durations_ms: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]
    #: Frame rates the rule is checked against: none for a variable frame rate.
    rates: tuple[float, ...]
    fps: float | None
    total_frames: int | None

    def broken_rule(self, rules: ClipRules) -> BrokenRule | None:
        """The first rule that every reading breaks, in the order of the clip rules."""
        if self.container is not None and (broken := container_rule(self.container)):
            return broken
        for readings in (
            [duration_rule(ms, rules) for ms in self.durations_ms],
            [dimensions_rule(width, height) for width, height in self.sizes],
            [fps_rule(rate) for rate in self.rates],
        ):
            if readings and all(readings):
                return readings[0]
        return None

    def video_facts(self) -> VideoFacts:
        """The reported readings, as a result's ``video`` carries them."""
        return VideoFacts(
            fps=self.fps,
            duration_ms=self.durations_ms[0] if self.durations_ms else None,
            width=self.sizes[0][0] if self.sizes else None,
            height=self.sizes[0][1] if self.sizes else None,
            total_frames=self.total_frames,
        )


@dataclass(frozen=True, slots=True)
class Undecided:
    """The probe cannot tell: the clip goes to the API. ``reason`` is for logs."""

    reason: str


def measure(reader: ClipReader) -> Measurement | BrokenRule | Undecided:
    """Open the clip with PyAV and read its facts.

    Returns a :class:`Measurement`, the container rule when the clip is certainly no MP4/MOV
    video, or :class:`Undecided`. A failure of the reader itself is left in ``reader.failure``
    for the caller (whatever this returns then is not to be trusted).
    """
    if reader.size == 0:
        return not_a_video("an empty file")
    head = reader.head(16)
    if not head:  # nothing to judge the bytes by (the reader's failure says why)
        return Undecided(reader.failure.reason if reader.failure else "no bytes read")
    try:
        with av.open(
            reader, mode="r", options=_OPEN_OPTIONS, buffer_size=reader.block_bytes
        ) as container:
            if reader.failure is not None:
                return Undecided(reader.failure.reason)
            return _measured(container, head)
    except av.error.FFmpegError:
        if reader.failure is not None:
            return Undecided(reader.failure.reason)
        if looks_like_iso_bmff(head):  # an MP4/MOV FFmpeg cannot read: cut short, or odd
            return _unopenable(reader)
        return not_a_video("not a video")


def _unopenable(reader: ClipReader) -> BrokenRule | Undecided:
    """An MP4/MOV FFmpeg cannot open: rejected only when it certainly has no ``moov`` (an
    upload cut short before it); a damaged one, or one the reader cannot walk, is the API's."""
    if lacks_moov(reader):
        return NO_MOOV
    return Undecided(reader.failure.reason if reader.failure else "an MP4/MOV FFmpeg cannot open")


def _measured(container: av.container.InputContainer, head: bytes) -> Measurement | BrokenRule:
    formats = container.format.name.split(",")
    if _ISO_BMFF_DEMUXER in formats:
        kind = container_of(head)
        name: str | None = kind if kind in ("mp4", "mov") else None
    else:
        name = container.format.name  # matroska,webm / avi / ...: what it is instead
    videos = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not videos:
        return not_a_video("no video stream")
    stream = videos[0]

    durations_ms: list[int] = []
    if stream.duration and stream.time_base is not None:
        durations_ms.append(round(stream.duration * stream.time_base * 1000))
    if container.duration:
        durations_ms.append(round(container.duration * 1000 / av.time_base))

    sizes: list[tuple[int, int]] = []
    context = stream.codec_context  # None at run time when FFmpeg has no decoder for the codec
    width, height = (context.width, context.height) if context is not None else (0, 0)
    if width and height:
        sizes.append((width, height))
        aspect = stream.sample_aspect_ratio
        if aspect and aspect != 1:
            sizes.append((round(width * aspect), height))

    # The average (frames over duration, from the container) is what the rule is checked on.
    # FFmpeg's guessed base rate only tells a variable rate apart; alone it can be a time base
    # (90000 for a fragmented MP4 read on one packet), so no average means no fps verdict.
    fps = _rate(stream.average_rate)
    guessed = _rate(stream.guessed_rate)
    variable = fps is not None and guessed is not None and abs(fps - guessed) > FPS_TOLERANCE
    rates = () if variable or fps is None else (fps,)

    frames = stream.frames or None
    if frames is None and durations_ms and fps:
        frames = round(durations_ms[0] * fps / 1000)
    return Measurement(
        container=name,
        durations_ms=tuple(dict.fromkeys(durations_ms)),
        sizes=tuple(dict.fromkeys(sizes)),
        rates=rates,
        fps=None if fps is None else round(fps, 3),
        total_frames=frames,
    )


def _rate(rate: Fraction | None) -> float | None:
    return float(rate) if rate else None
