"""A clip host that misbehaves on purpose, on 127.0.0.1: for the pre-flight's deadline, budget
and address tests.

It serves one clip with Range support under these routes:

- ``/clip``: promptly, like S3;
- ``/trickle-head``: the status line and headers one byte every ``pace_s``;
- ``/trickle-body``: the headers at once, then the body one byte every ``pace_s``;
- ``/stall-body``: the headers and half the body, then nothing until the client hangs up.

A trickle of a 64 KiB answer at a byte per 0.2 s would last over three hours: only the client
ends it. Every handler also ends when the host stops.
"""

from __future__ import annotations

import re
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class MisbehavingHost:
    """The running host: where it is, and what it was asked."""

    base_url: str
    data: bytes
    pace_s: float = 0.2
    stopped: threading.Event = field(default_factory=threading.Event)
    requests: int = 0
    #: The ``Host`` header of each request.
    host_headers: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, route: str) -> str:
        return f"{self.base_url}/{route}"

    def _count(self, host_header: str) -> None:
        with self._lock:
            self.requests += 1
            self.host_headers.append(host_header)


def _make_handler(host: MisbehavingHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            host._count(self.headers.get("Host", ""))
            route = self.path.strip("/").split("?", 1)[0]
            head, body = self._answer()
            try:
                if route == "trickle-head":
                    self._trickle(head + body)
                elif route == "trickle-body":
                    self.wfile.write(head)
                    self._trickle(body)
                elif route == "stall-body":
                    self.wfile.write(head + body[: len(body) // 2])
                    self.wfile.flush()
                    self._wait_for_hang_up()
                else:
                    self.wfile.write(head + body)
            except OSError:
                self.close_connection = True  # the client hung up: what it is meant to do

        def _answer(self) -> tuple[bytes, bytes]:
            data = host.data
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            start = int(match.group(1)) if match else 0
            end = len(data) - 1
            if match and match.group(2):
                end = min(int(match.group(2)), end)
            body = data[start : end + 1]
            head = (
                "HTTP/1.1 206 Partial Content\r\n"
                "Content-Type: video/mp4\r\n"
                f"Content-Range: bytes {start}-{end}/{len(data)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            return head, body

        def _trickle(self, data: bytes) -> None:
            for index in range(len(data)):
                if host.stopped.wait(host.pace_s):
                    return
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()

        def _wait_for_hang_up(self) -> None:
            connection: socket.socket = self.connection
            while not host.stopped.is_set():
                readable, _, _ = select.select([connection], [], [], 0.05)
                if readable and not connection.recv(1, socket.MSG_PEEK):
                    return
            self.close_connection = True

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # Room for many probes connecting at once: a full backlog drops SYNs, retried after 1 s.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is what these tests want."""


@contextmanager
def misbehaving_host(data: bytes, *, pace_s: float = 0.2) -> Iterator[MisbehavingHost]:
    """Serve ``data`` on 127.0.0.1 under the routes above until the block ends."""
    server = _QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host = MisbehavingHost(f"http://127.0.0.1:{server.server_address[1]}", data, pace_s)
    server.RequestHandlerClass = _make_handler(host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        host.stopped.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
