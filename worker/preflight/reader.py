"""A read-only, seekable file over HTTP Range GETs of one clip, for PyAV to open.

Bytes are fetched in blocks, kept for the life of the probe, and the blocks a read misses are
fetched together in one ranged GET. The reader never raises from ``read``/``seek`` (PyAV calls
them from C and reports an exception as an I/O error of its own): it records the first
:class:`ReadFailure`, answers end-of-file from then on, and the probe looks at ``failure`` after
opening. Every probe is bounded by :class:`ReadLimits` (bytes, requests, socket timeouts) and by
its :class:`~worker.preflight.deadline.Deadline`, which cuts the connection in flight when it
passes; the bytes it keeps are taken from the process's
:class:`~worker.preflight.budget.ByteBudget` first.

Failure reasons say what happened, never how the network answered (no exception names, no
addresses): they end up in job results and logs.

One reader per probe and per thread; the ``requests.Session`` it reads with is the process's.
"""

from __future__ import annotations

import http.client
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import requests
import urllib3.exceptions

from contract.clip_rules import PREFLIGHT_TIMEOUT_S
from worker.preflight.addresses import NonPublicHost
from worker.preflight.budget import Share
from worker.preflight.deadline import Deadline

#: Statuses that mean the clip is not there, or not for us.
GONE_STATUSES = frozenset({403, 404, 410})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSATISFIED = re.compile(r"bytes \*/(\d+)")
#: Most bytes one socket read asks for.
_READ_BYTES = 64 * 1024
#: What reading a body can raise when the host, or the deadline, breaks the connection off.
_BROKEN_OFF = (
    urllib3.exceptions.HTTPError,
    requests.RequestException,
    http.client.HTTPException,
    OSError,
    ValueError,  # a read on a socket the deadline shut
)

FailureKind = Literal["gone", "down", "undecided", "forbidden"]


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How much one probe may read: never the whole of a large clip."""

    #: Bytes per cached block; a read's missing blocks are fetched in one request.
    block_bytes: int = 16 * 1024
    #: Bytes of the first request: the header, and often the whole ``moov`` of a faststart MP4.
    first_bytes: int = 64 * 1024
    #: Most bytes one clip may cost; a probe that needs more leaves the clip to the API.
    max_bytes: int = 4 * 1024 * 1024
    #: Most ranged GETs per clip.
    max_requests: int = 24
    #: The whole probe's wall-clock deadline, all requests together: at it the connection in
    #: flight is cut, however the host trickles or stalls.
    timeout_s: float = PREFLIGHT_TIMEOUT_S
    #: Connect timeout of each request (within the deadline).
    connect_timeout_s: float = 3.05
    #: Longest one socket read may wait for a byte (within the deadline).
    read_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ReadFailure:
    """Why the clip could not be read.

    ``kind``: ``gone`` (403/404/410: no such clip), ``down`` (timeout, connection error, 429 or
    5xx: worth a retry), ``undecided`` (the probe cannot tell without going over its limits or
    past what the host offers: the API decides), ``forbidden`` (a caller's host on a non-public
    address: nothing was sent to it).
    """

    kind: FailureKind
    reason: str
    http_status: int | None = None


class ClipReader(io.RawIOBase):
    """The clip at ``url`` as a seekable file; the first block is fetched on construction.

    ``deadline`` bounds the whole probe (the reader finishes it on :meth:`close`); ``share`` is
    the probe's part of the process's byte budget (released on :meth:`close`).
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        limits: ReadLimits,
        *,
        deadline: Deadline,
        share: Share,
    ) -> None:
        super().__init__()
        self._session, self._url, self._limits = session, url, limits
        self._deadline, self._share = deadline, share
        #: Cached blocks: views into the buffers the answers were read into (no copies).
        self._blocks: dict[int, memoryview] = {}
        self._pos = 0
        #: False when the host ignores Range: only the bytes of the first answer exist for us.
        self._ranged = True
        self.size: int | None = None
        self.bytes_read = 0
        self.requests = 0
        self.failure: ReadFailure | None = None
        try:
            self._open()
        except BaseException:
            self.close()  # nobody else holds the reader yet: give its bytes back
            raise

    @property
    def block_bytes(self) -> int:
        """The cache's block size: reads of this size cost at most two blocks."""
        return self._limits.block_bytes

    def close(self) -> None:
        """Drop the cached bytes, give them back to the budget, and end the deadline's watch."""
        self._blocks.clear()
        self._share.release()
        self._deadline.finish()
        super().close()

    # -- the file interface PyAV uses -------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            if self.size is None:
                self._fail("undecided", "the clip's size is unknown")
                return self._pos
            base = self.size
        else:
            base = self._pos if whence == io.SEEK_CUR else 0
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self.failure is not None or self.size is None:
            return b""
        end = self.size if size < 0 else min(self.size, self._pos + size)
        if self._pos >= end or not self._have(self._pos, end):
            return b""
        data = self._slice(self._pos, end)
        self._pos = end
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def head(self, count: int) -> bytes:
        """The first ``count`` bytes (or fewer), without moving the position."""
        if self.size is None or not self._have(0, min(count, self.size)):
            return b""
        return self._slice(0, min(count, self.size))

    # -- fetching ---------------------------------------------------------------------------

    def _open(self) -> None:
        """The first ranged GET: it tells the size, and whether the host honours ranges."""
        block = self._limits.block_bytes
        first = max(block, self._limits.first_bytes // block * block)
        if not self._take(first):
            return
        with self._exchange(0, first) as response:
            if response is None:
                return
            status = response.status_code
            if status == 416:  # no byte 0: an empty object (S3 need not say `bytes */0`)
                match = _CONTENT_RANGE_UNSATISFIED.fullmatch(
                    response.headers.get("Content-Range", "")
                )
                if match is None or match.group(1) == "0":
                    self.size = 0
                else:
                    self._fail("undecided", "HTTP 416 to a ranged read of the first bytes")
                return
            if status == 200:
                self._open_unranged(response, taken=first)
                return
            self._accept_range(response, 0, first)

    def _open_unranged(self, response: requests.Response, *, taken: int) -> None:
        """A 200 to the first read: the host ignores Range. Keep what fits in the budget."""
        self._ranged = False
        block, limit = self._limits.block_bytes, self._limits.max_bytes
        length = response.headers.get("Content-Length", "")
        wanted = min(int(length), limit) if length.isdigit() else limit
        if not self._take(wanted - taken):
            return
        body = self._body(response, wanted)
        if body is None:
            return
        if len(body) < limit:
            self.size = len(body)
        elif length.isdigit():
            self.size = int(length)
            del body[len(body) // block * block :]  # whole blocks only: a read past them fails
        else:
            self._fail("undecided", "the host ignores Range and gives no size")
            return
        self._share.give_back(max(taken, wanted) - len(body))
        self._store(0, body)

    def _have(self, start: int, end: int) -> bool:
        """Fetch the blocks of ``[start, end)`` that are missing, one GET per contiguous run."""
        block = self._limits.block_bytes
        first, last = start // block, (end - 1) // block
        index = first
        while index <= last:
            if index in self._blocks:
                index += 1
                continue
            run_end = index
            while run_end + 1 <= last and run_end + 1 not in self._blocks:
                run_end += 1
            if not self._fetch(index * block, min((run_end + 1) * block, self._size_or(end))):
                return False
            index = run_end + 1
        return True

    def _fetch(self, start: int, end: int) -> bool:
        if not self._ranged:
            self._fail("undecided", "the host ignores Range and the clip is over the byte budget")
            return False
        if self.bytes_read + (end - start) > self._limits.max_bytes:
            self._fail("undecided", f"more than {self._limits.max_bytes} bytes needed")
            return False
        if self.requests >= self._limits.max_requests:
            self._fail("undecided", f"more than {self._limits.max_requests} requests needed")
            return False
        if not self._take(end - start):
            return False
        with self._exchange(start, end - start) as response:
            return response is not None and self._accept_range(response, start, end - start)

    def _take(self, count: int) -> bool:
        """Take ``count`` bytes of the process's budget before reading them, within the
        deadline (other probes may hold it all for now)."""
        if self._share.take(count, self._deadline):
            return True
        self._fail("down", f"not read within {self._limits.timeout_s:g} s: the worker is busy")
        return False

    @contextmanager
    def _exchange(self, start: int, length: int) -> Iterator[requests.Response | None]:
        """A ranged GET whose connection the deadline cuts, answered 200, 206 or 416 (or None:
        the failure is recorded), and closed once the caller is done with it."""
        with self._deadline.request():
            response = self._send(start, length)
            try:
                yield response
            finally:
                if response is not None:
                    response.close()

    def _send(self, start: int, length: int) -> requests.Response | None:
        remaining_s = self._deadline.remaining_s()
        if remaining_s <= 0:
            self._fail_down("")
            return None
        self.requests += 1
        limits = self._limits
        try:
            response = self._session.get(
                self._url,
                # Identity: a compressed answer's bytes would not be the clip's byte range.
                headers={
                    "Range": f"bytes={start}-{start + length - 1}",
                    "Accept-Encoding": "identity",
                },
                timeout=(
                    min(limits.connect_timeout_s, remaining_s),
                    min(limits.read_timeout_s, remaining_s),
                ),
                stream=True,
                # A redirect may lead anywhere (another network, a login page): the API decides.
                allow_redirects=False,
            )
        except NonPublicHost:
            self._fail("forbidden", "the host is not a public address")
            return None
        except requests.Timeout:
            self._fail_down("the clip host timed out")
            return None
        except _BROKEN_OFF:
            self._fail_down("the clip host could not be reached")
            return None
        if response.status_code in (200, 206, 416):
            return response
        response.close()
        status = response.status_code
        if status in GONE_STATUSES:
            self._fail("gone", f"HTTP {status}", status)
        elif status == 429 or status >= 500:
            self._fail("down", f"HTTP {status}", status)
        else:
            self._fail("undecided", f"HTTP {status} to a ranged read", status)
        return None

    def _accept_range(self, response: requests.Response, start: int, length: int) -> bool:
        """Store a 206 answer for ``[start, start + length)``; anything else fails the probe."""
        if response.status_code != 206:
            self._fail("undecided", f"HTTP {response.status_code} to a later ranged read")
            return False
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or match.group(3) == "*" or int(match.group(1)) != start:
            self._fail("undecided", "a 206 answer without a usable Content-Range")
            return False
        total = int(match.group(3))
        if self.size is not None and total != self.size:
            self._fail("undecided", "the clip changed size while it was read")
            return False
        self.size = total
        expected = min(start + length, total) - start
        body = self._body(response, expected)
        if body is None:
            return False
        if len(body) < expected:
            self._fail_down(f"the answer ended after {len(body)} of {expected} bytes")
            return False
        self._share.give_back(length - expected)
        self._store(start, body)
        return True

    def _body(self, response: requests.Response, limit: int) -> bytearray | None:
        """At most ``limit`` bytes of the body, read straight into one buffer."""
        buffer = bytearray(limit)
        filled = 0
        with memoryview(buffer) as view:
            try:
                while filled < limit:
                    count = response.raw.readinto(view[filled : filled + _READ_BYTES])
                    if not count:
                        break
                    filled += count
                    self.bytes_read += count
            except urllib3.exceptions.TimeoutError:
                self._fail_down("the clip host timed out")
                return None
            except _BROKEN_OFF:
                self._fail_down("the answer broke off")
                return None
        del buffer[filled:]
        return buffer

    def _store(self, start: int, data: bytearray) -> None:
        """Keep ``data`` (which starts on a block boundary) as whole blocks: views, not copies."""
        block = self._limits.block_bytes
        view = memoryview(data)
        for offset in range(0, len(data), block):
            self._blocks[(start + offset) // block] = view[offset : offset + block]

    def _slice(self, start: int, end: int) -> bytes:
        block = self._limits.block_bytes
        parts = []
        for index in range(start // block, (end - 1) // block + 1):
            data = self._blocks[index]
            base = index * block
            parts.append(data[max(start - base, 0) : end - base])
        return b"".join(parts)

    def _size_or(self, default: int) -> int:
        return self.size if self.size is not None else default

    def _fail_down(self, reason: str) -> None:
        """A retryable failure; past the deadline it is the deadline's, whatever broke."""
        if self._deadline.expired:
            reason = f"no answer within {self._limits.timeout_s:g} s"
        self._fail("down", reason)

    def _fail(self, kind: FailureKind, reason: str, status: int | None = None) -> None:
        if self.failure is None:
            self.failure = ReadFailure(kind, reason, status)
