"""Awkward clips for the pre-flight tests, made with PyAV in well under a second each.

Frames are not encoded one by one: one key frame is encoded, and its packet is muxed again for
every frame (an all-intra stream of identical pictures), so even the clip of tens of MB costs
one encode. Timestamps are set per packet, which makes variable frame rates exact.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

from contract.clip_rules import RuleName
from simulator.samples import sample_clip_path

#: What the pre-flight must do with a clip: stop it, pass it to the API with its facts, or
#: leave it to the API because it cannot tell.
Expect = Literal["rejected", "passed", "deferred"]


@dataclass(frozen=True, slots=True)
class Shape:
    """The clip to encode."""

    width: int = 1280
    height: int = 720
    fps: int | Fraction = 30
    duration_s: float = 5.0
    fmt: str = "mp4"
    container_options: tuple[tuple[str, str], ...] = ()
    #: Bytes of noise per key frame (roughly): a large, incompressible clip.
    noise: bool = False
    #: Frame durations alternate short and long around the average (a variable frame rate).
    variable: bool = False
    rotation: int = 0
    audio_s: float | None = None


@dataclass(frozen=True, slots=True)
class CorpusClip:
    """One clip of the corpus: how to make it and what the pre-flight must make of it."""

    filename: str
    make: Callable[[Path], None]
    expect: Expect
    breaks: RuleName | None = None
    #: The probed facts a passed clip must report: (duration_ms, width, height, fps).
    facts: tuple[int, int, int, float] | None = None


def encode(path: Path, shape: Shape) -> None:
    """Write a clip of ``shape`` to ``path``."""
    tick = Fraction(1, 90000)
    frames = round(shape.duration_s * shape.fps)
    step = round(Fraction(90000) / Fraction(shape.fps))
    # A variable rate: durations alternate step/2 and 3*step/2, averaging exactly `fps`.
    durations = [step // 2 if i % 2 == 0 else step * 3 // 2 for i in range(frames)]
    if not shape.variable:
        durations = [step] * frames
    options = dict(shape.container_options)
    with av.open(str(path), "w", format=shape.fmt, container_options=options) as out:
        codec = "libvpx" if shape.fmt == "webm" else "libx264"
        video = out.add_stream(codec, rate=shape.fps)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = shape.width, shape.height, "yuv420p"
        if codec == "libx264":
            video.options = {"preset": "ultrafast", "qp": "24" if shape.noise else "30"}
        video.codec_context.time_base = tick
        if shape.rotation:
            video.set_display_rotation(shape.rotation)
        audio = out.add_stream("aac", rate=48000) if shape.audio_s else None
        picture = _picture(shape.width, shape.height, shape.noise)
        picture.pts, picture.time_base = 0, tick
        (keyframe,) = [bytes(p) for p in [*video.encode(picture), *video.encode()]]
        pts = 0
        for duration in durations:
            packet = av.Packet(keyframe)
            packet.stream, packet.time_base = video, tick
            packet.pts = packet.dts = pts
            packet.duration, packet.is_keyframe = duration, True
            out.mux(packet)
            pts += duration
        if audio is not None and shape.audio_s is not None:
            _silence(out, audio, shape.audio_s)


def _picture(width: int, height: int, noise: bool) -> av.VideoFrame:
    row = b"".join(bytes((x * 255 // width, 128, 64, 255)) for x in range(width))
    data = row * height
    if noise:  # the top third is noise: a key frame of some 300 KB
        noisy = width * 4 * (height // 3)
        data = random.Random(7).randbytes(noisy) + data[noisy:]
    return av.VideoFrame.from_bytes(data, width, height, format="rgba")


def _silence(out: av.container.OutputContainer, audio: av.AudioStream, seconds: float) -> None:
    samples = 1024
    for index in range(round(seconds * 48000 / samples)):
        frame = av.AudioFrame(format="fltp", layout="stereo", samples=samples)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts = 48000, index * samples
        for packet in audio.encode(frame):
            out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)


def _clip(shape: Shape) -> Callable[[Path], None]:
    return lambda path: encode(path, shape)


def _truncated(shape: Shape, keep: float) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        encode(path, shape)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return make


def top_level_boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Each top-level box's (offset, size) by type, of a complete file with 32-bit sizes."""
    boxes: dict[bytes, tuple[int, int]] = {}
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        boxes[kind] = (offset, size)
        offset += size
    return boxes


def _sample(name: str, edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """A variant of the simulator's sample clip ``name`` (a moov-at-end MP4 or MOV)."""

    def make(path: Path) -> None:
        path.write_bytes(edit(sample_clip_path(name).read_bytes()))

    return make


def _cut(keep: float) -> Callable[[bytes], bytes]:
    """An upload cut short: only the first ``keep`` of the bytes arrived."""
    return lambda data: data[: int(len(data) * keep)]


def _without_moov(data: bytes) -> bytes:
    """Every box but the moov: the boxes end where the file does."""
    offset, _ = top_level_boxes(data)[b"moov"]
    return data[:offset]


def _with_largesize_mdat(data: bytes) -> bytes:
    """The mdat's header rewritten with a 64-bit ``largesize`` (as for clips over 4 GB)."""
    offset, size = top_level_boxes(data)[b"mdat"]
    header = struct.pack(">I4sQ", 1, b"mdat", size + 8)
    return data[:offset] + header + data[offset + 8 :]


def _padded_after_ftyp(padding: int) -> Callable[[bytes], bytes]:
    """A ``free`` box of ``padding`` bytes after the ftyp: later headers lie beyond the first
    read."""

    def edit(data: bytes) -> bytes:
        _, ftyp_size = top_level_boxes(data)[b"ftyp"]
        free = struct.pack(">I4s", padding, b"free") + bytes(padding - 8)
        return data[:ftyp_size] + free + data[ftyp_size:]

    return edit


def _damaged_box(data: bytes) -> bytes:
    """The ``free`` box's size set to 3, under its own header's 8: no walk can go past it."""
    offset, _ = top_level_boxes(data)[b"free"]
    return data[:offset] + struct.pack(">I", 3) + data[offset + 4 :]


def _moov_cut_short(data: bytes) -> bytes:
    """Cut in the middle of the moov: there is one, but not whole."""
    offset, size = top_level_boxes(data)[b"moov"]
    return data[: offset + size // 2]


def _bytes(data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(data)

    return make


FASTSTART = (("movflags", "+faststart"),)
#: 1 s fragments after an empty moov: what a live encoder or a DASH packager writes.
FRAGMENTED = (("movflags", "+empty_moov+default_base_moof"), ("frag_duration", "1000000"))
HD = (1280, 720)

#: Every clip of the corpus, by file name.
CORPUS: dict[str, CorpusClip] = {
    clip.filename: clip
    for clip in (
        # Each rule broken once (the duration rule twice: too short, and in the gap).
        CorpusClip("too_short.mp4", _clip(Shape(duration_s=1.5)), "rejected", "duration"),
        CorpusClip("in_the_gap.mp4", _clip(Shape(duration_s=6.0)), "rejected", "duration"),
        CorpusClip("small.mp4", _clip(Shape(640, 360, 24, 3.0)), "rejected", "dimensions"),
        CorpusClip("fps_25.mp4", _clip(Shape(fps=25, duration_s=3.0)), "rejected", "fps"),
        CorpusClip("fps_ntsc.mp4", _clip(Shape(fps=Fraction(30000, 1001))), "rejected", "fps"),
        CorpusClip(
            "text.mp4", _bytes(b"This is a text file, not a video.\n"), "rejected", "container"
        ),
        CorpusClip("empty.mp4", _bytes(b""), "rejected", "container"),
        CorpusClip("clip.mkv", _clip(Shape(fmt="matroska")), "rejected", "container"),
        CorpusClip("clip.webm", _clip(Shape(fmt="webm")), "rejected", "container"),
        CorpusClip("clip.avi", _clip(Shape(fmt="avi")), "rejected", "container"),
        # Valid clips in awkward shapes: each passes with the facts the probe read.
        CorpusClip(
            "faststart.mp4",
            _clip(Shape(container_options=FASTSTART)),
            "passed",
            facts=(5000, 1280, 720, 30.0),
        ),
        CorpusClip("moov_at_end.mp4", _clip(Shape()), "passed", facts=(5000, 1280, 720, 30.0)),
        CorpusClip(
            "phone.mov",
            _clip(Shape(1920, 1080, 30, 8.0, fmt="mov", rotation=90, audio_s=8.05)),
            "passed",
            facts=(8000, 1920, 1080, 30.0),
        ),
        CorpusClip("vfr.mp4", _clip(Shape(variable=True)), "passed", facts=(5000, 1280, 720, 30.0)),
        CorpusClip(
            "fragmented.mp4",
            _clip(Shape(container_options=FRAGMENTED)),
            "passed",
            facts=(5000, 1280, 720, 30.0),
        ),
        CorpusClip(
            "rotated.mp4",
            _clip(Shape(rotation=90, duration_s=3.0)),
            "passed",
            facts=(3000, 1280, 720, 30.0),
        ),
        CorpusClip(
            "large.mp4",
            _clip(Shape(fps=24, noise=True)),
            "passed",
            facts=(5000, 1280, 720, 24.0),
        ),
        # A truncated upload with its moov up front is described whole by it; with the moov at
        # the end it has none, which its box headers show: no call.
        CorpusClip(
            "truncated_faststart.mp4",
            _truncated(Shape(container_options=FASTSTART), 0.5),
            "passed",
            facts=(5000, 1280, 720, 30.0),
        ),
        CorpusClip("truncated_moov_lost.mp4", _truncated(Shape(), 0.5), "rejected", "container"),
        # The sample clips (moov at the end) cut short, or without their moov, in each shape the
        # box walk must read: an mdat that runs past the end, boxes that end at the end, a
        # 64-bit mdat size, an mdat header beyond the first read.
        CorpusClip("sample_cut_30.mp4", _sample("valid_mp4", _cut(0.3)), "rejected", "container"),
        CorpusClip(
            "sample_no_moov.mov", _sample("valid_mov", _without_moov), "rejected", "container"
        ),
        CorpusClip(
            "sample_largesize_cut.mp4",
            _sample("valid_mp4", lambda data: _cut(0.3)(_with_largesize_mdat(data))),
            "rejected",
            "container",
        ),
        CorpusClip(
            "sample_padded_cut.mp4",
            _sample("valid_mp4", lambda data: _cut(0.95)(_padded_after_ftyp(1_000_000)(data))),
            "rejected",
            "container",
        ),
        # An MP4 FFmpeg cannot open that may still have a moov: the API decides.
        CorpusClip("sample_moov_cut_short.mp4", _sample("valid_mp4", _moov_cut_short), "deferred"),
        CorpusClip("sample_damaged_box.mp4", _sample("valid_mp4", _damaged_box), "deferred"),
    )
}

#: 5.3 s: inside CometAPI's first window, outside Kling's.
KLING_ONLY_BREAKER = CorpusClip("five_point_three.mp4", _clip(Shape(duration_s=5.3)), "passed")


def build(directory: Path) -> dict[str, bytes]:
    """Make every clip of the corpus in ``directory`` (once) and return them by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for clip in (*CORPUS.values(), KLING_ONLY_BREAKER):
        path = directory / clip.filename
        if not path.exists():
            clip.make(path)
        files[clip.filename] = path.read_bytes()
    return files
