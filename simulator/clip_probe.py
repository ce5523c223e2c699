"""Download a `video_url` and probe it with PyAV, without blocking the event loop.

The download uses HTTP Range requests when the server honours them (PyAV reads only the boxes it
needs: the header and a little of the media), and falls back to one bounded full download when
it answers 200 to a ranged GET. Presigned S3 URLs are signed for GET only, so there is no HEAD.
Everything here is blocking; `simulator.prober` runs it in a thread executor.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import IO

import av
import requests

from contract.clip_rules import ClipFacts, container_of

#: Bytes fetched per ranged GET.
BLOCK_BYTES = 256 * 1024
#: Most bytes read from one URL, ranged or not.
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: Connect and read timeout of each GET.
HTTP_TIMEOUT_S = (5.0, 20.0)

_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")


class DownloadError(Exception):
    """Raised when the URL cannot be downloaded; `reason` says why (e.g. "HTTP 403")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAVideo(Exception):
    """Raised when the bytes are no MP4/MOV video PyAV can read; `container` names what it is."""

    def __init__(self, container: str) -> None:
        super().__init__(container)
        self.container = container


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe outcome worth caching: the clip's facts, or what it was instead of a video."""

    facts: ClipFacts | None
    not_a_video: str | None = None


class RangeReader(io.RawIOBase):
    """A seekable read-only file over HTTP Range GETs, fetched in blocks and kept in memory."""

    def __init__(self, session: requests.Session, url: str, size: int, first: bytes) -> None:
        super().__init__()
        self._session, self._url, self._size = session, url, size
        self._blocks: dict[int, bytes] = {0: first}
        self._pos = 0
        self._fetched = len(first)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._pos < self._size:
            index, start = divmod(self._pos, BLOCK_BYTES)
            chunk = self._block(index)[start : start + len(view) - written]
            if not chunk:
                break
            view[written : written + len(chunk)] = chunk
            written += len(chunk)
            self._pos += len(chunk)
        return written

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            start = index * BLOCK_BYTES
            end = min(start + BLOCK_BYTES, self._size) - 1
            if self._fetched + (end - start + 1) > MAX_DOWNLOAD_BYTES:
                raise DownloadError(f"more than {MAX_DOWNLOAD_BYTES} bytes read")
            try:
                response = self._session.get(
                    self._url, headers={"Range": f"bytes={start}-{end}"}, timeout=HTTP_TIMEOUT_S
                )
            except requests.RequestException as exc:
                raise DownloadError(f"ranged read failed ({type(exc).__name__})") from exc
            if response.status_code != 206:
                raise DownloadError(f"HTTP {response.status_code} on a ranged read")
            block = response.content
            self._fetched += len(block)
            self._blocks[index] = block
        return block


def open_remote(session: requests.Session, url: str) -> IO[bytes]:
    """A seekable reader over `url`: ranged when the server supports it, else fully downloaded."""
    try:
        response = session.get(
            url,
            headers={"Range": f"bytes=0-{BLOCK_BYTES - 1}"},
            timeout=HTTP_TIMEOUT_S,
            stream=True,
        )
    except requests.RequestException as exc:
        raise DownloadError(f"connection failed ({type(exc).__name__})") from exc
    with response:
        if response.status_code == 416:  # an empty object: no byte 0 to range over
            return io.BytesIO(b"")
        if response.status_code not in (200, 206):
            raise DownloadError(f"HTTP {response.status_code}")
        body = _read_bounded(response)
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if response.status_code == 200 or match is None:
        return io.BytesIO(body)
    return io.BufferedReader(RangeReader(session, url, int(match.group(1)), body))


def _read_bounded(response: requests.Response) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_content(chunk_size=64 * 1024):
            total += len(chunk)
            if total > MAX_DOWNLOAD_BYTES:
                raise DownloadError(f"more than {MAX_DOWNLOAD_BYTES} bytes")
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise DownloadError(f"download interrupted ({type(exc).__name__})") from exc
    return b"".join(chunks)


def probe_file(source: IO[bytes]) -> Probe:
    """Probe an open clip: container, duration, size, frame rate, frame count."""
    head = source.read(12)
    source.seek(0)
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.video:
                return Probe(None, not_a_video="no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration is not None and stream.time_base is not None:
                duration_s = float(stream.duration * stream.time_base)
            else:
                duration_s = (container.duration or 0) / av.time_base
            fps = float(rate) if rate else 0.0
            frames = stream.frames or round(duration_s * fps)
            facts = ClipFacts(
                container=container_of(head),
                duration_ms=round(duration_s * 1000),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=round(fps, 3),
                total_frames=frames,
            )
    except av.error.FFmpegError:
        return Probe(None, not_a_video="not a video")
    return Probe(facts)


def probe_url(url: str) -> Probe:
    """Download (ranged when possible) and probe `url`; DownloadError when it cannot be read."""
    with requests.Session() as session:
        session.trust_env = False
        source = open_remote(session, url)
        with source:
            return probe_file(source)
