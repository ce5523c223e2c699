"""Encode the simulator's sample clips (simulator/clips/) from the SAMPLE_CLIPS table.

Run `python scripts/make_clips.py` after changing the table. Frames are synthetic (sliding colour
bars) so the clips are small and exact: every clip has exactly duration x fps frames.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator.samples import CLIPS_DIR, SAMPLE_CLIPS, SampleClip

#: The colour bars, RGBA.
BARS = (
    bytes((192, 192, 192, 255)),
    bytes((192, 192, 0, 255)),
    bytes((0, 192, 192, 255)),
    bytes((0, 192, 0, 255)),
    bytes((192, 0, 192, 255)),
    bytes((192, 0, 0, 255)),
)


def _frame(width: int, height: int, index: int, moving: bool) -> av.VideoFrame:
    """Colour bars, shifted by the frame index when `moving` (flat large clips stay tiny)."""
    shift = (index * 8) if moving else 0
    row = b"".join(BARS[((x + shift) * len(BARS) // width) % len(BARS)] for x in range(width))
    return av.VideoFrame.from_bytes(row * height, width, height, format="rgba")


def _codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def make_clip(clip: SampleClip, directory: Path) -> Path:
    """Encode one clip into `directory` and return its path."""
    path = directory / clip.filename
    if clip.container is None:
        path.write_text("This is a text file, not a video.\n", encoding="utf-8")
        return path
    assert clip.width is not None
    assert clip.height is not None
    assert clip.fps is not None
    assert clip.duration_s is not None
    fmt = "mov" if clip.container == "mov" else "mp4"
    with av.open(str(path), mode="w", format=fmt) as output:
        stream = output.add_stream(_codec(), rate=Fraction(clip.fps))
        assert isinstance(stream, av.VideoStream)
        stream.width = clip.width
        stream.height = clip.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.max_b_frames = 0
        stream.options = {"crf": "38", "preset": "medium"} if _codec() == "libx264" else {}
        moving = clip.width * clip.height <= 1280 * 720
        for index in range(round(clip.duration_s * clip.fps)):
            frame = _frame(clip.width, clip.height, index, moving)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def main() -> None:
    """Make every clip of SAMPLE_CLIPS and print its size."""
    CLIPS_DIR.mkdir(exist_ok=True)
    for clip in SAMPLE_CLIPS.values():
        path = make_clip(clip, CLIPS_DIR)
        print(f"{path.name}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
