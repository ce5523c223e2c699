"""A local clip host for the simulator tests.

It is a real HTTP server in a thread that serves the sample clips (and any extra files) with
Range support (like S3), the same clips without it, an S3-style 403 for expired signatures, 404s,
any status (``/status/<code>/<file>``), slow answers (``/slow/<file>``), redirects
(``/redirect/<file>``) and chunked answers that ignore Range (``/chunked/<file>``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from simulator.samples import CLIPS_DIR, sample_clip_path

#: An S3 answer to a presigned URL whose signature expired.
EXPIRED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)
#: A valid clip padded with a 3 MiB `free` box: ranged reads must not fetch the padding.
PADDED_NAME = "padded_valid.mp4"
PADDING_BYTES = 3 * 1024 * 1024


@dataclass
class ClipHost:
    """The running clip host: where it is and what it was asked for."""

    base_url: str
    files: dict[str, bytes]
    served: list[tuple[str, str | None, int, int]] = field(default_factory=list)
    #: How long ``/slow/<file>`` waits before it answers.
    slow_s: float = 2.0

    def url(self, name: str, *, ranged: bool = True, query: str = "") -> str:
        """URL of sample clip `name` (a SAMPLE_CLIPS key), optionally without Range support."""
        filename = name if name == PADDED_NAME else sample_clip_path(name).name
        prefix = "clips" if ranged else "norange"
        return f"{self.base_url}/{prefix}/{filename}" + (f"?{query}" if query else "")

    def file_url(self, filename: str, *, route: str = "clips") -> str:
        """URL of any served file (a sample's or an extra one's name) under ``route``."""
        return f"{self.base_url}/{route}/{filename}"

    def bytes_served(self, filename: str) -> int:
        """Body bytes sent for `filename` so far."""
        return sum(size for path, _, _, size in self.served if path.endswith(filename))

    def requests_for(self, filename: str) -> int:
        """Requests answered for `filename` so far."""

        def name(path: str) -> str:
            return path if "?" in filename else path.split("?", 1)[0]

        return sum(1 for path, _, _, _ in self.served if name(path).endswith(filename))


def _make_handler(host: ClipHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as S3 and CDNs do: a probe's ranged reads share one connection.
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # delayed ACKs hold each answer back tens of milliseconds on a kept-alive connection.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `host.served` instead."""

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            # Recorded before any byte goes out: a client that has its answer (a status may be
            # all it reads) finds it counted.
            host.served.append((self.path, self.headers.get("Range"), status, len(body)))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_chunked(self, body: bytes) -> None:
            host.served.append((self.path, self.headers.get("Range"), 200, len(body)))
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for offset in range(0, len(body), 64 * 1024):
                chunk = body[offset : offset + 64 * 1024]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            parts = path.strip("/").split("/")
            if parts[0] == "expired":
                self._send(403, EXPIRED_XML, {"Content-Type": "application/xml"})
                return
            if parts[0] == "status" and len(parts) == 3:
                self._send(int(parts[1]), b"status", {"Content-Type": "text/plain"})
                return
            if parts[0] == "redirect" and len(parts) == 2:
                self._send(302, b"", {"Location": f"{host.base_url}/clips/{parts[1]}"})
                return
            if parts[0] == "slow":
                time.sleep(host.slow_s)
                parts[0] = "clips"
            data = host.files.get(parts[-1]) if len(parts) == 2 else None
            if data is None or parts[0] not in ("clips", "norange", "chunked"):
                self._send(404, b"not found", {"Content-Type": "text/plain"})
                return
            headers = {"Content-Type": "video/mp4", "Accept-Ranges": "bytes"}
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            if parts[0] == "chunked":  # no Range, no Content-Length: a size nobody tells
                self._send_chunked(data)
                return
            if parts[0] == "norange" or match is None:
                headers.pop("Accept-Ranges")
                self._send(200, data, headers)
                return
            start = int(match.group(1))
            end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, data[start : end + 1], headers)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout under test) is no error of the host's."""


def padded_clip() -> bytes:
    data = sample_clip_path("valid_mp4").read_bytes()
    box_size = 8 + PADDING_BYTES
    return data + box_size.to_bytes(4, "big") + b"free" + bytes(PADDING_BYTES)


@contextmanager
def serving_clips(extra: Mapping[str, bytes] | None = None) -> Iterator[ClipHost]:
    """Serve the sample clips (the padded one, and ``extra`` by name) over HTTP on 127.0.0.1."""
    files = {path.name: path.read_bytes() for path in CLIPS_DIR.iterdir() if path.is_file()}
    files[PADDED_NAME] = padded_clip()
    files.update(extra or {})
    server = _QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host = ClipHost(f"http://127.0.0.1:{server.server_address[1]}", files)
    server.RequestHandlerClass = _make_handler(host)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
