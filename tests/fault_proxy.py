"""A TCP proxy on loopback that tests put between a client and a real server to break the link
on purpose: cut it, stall it, slow it down, or cut an answer short, while connections are open.

    with running_fault_proxy("127.0.0.1", 6379) as proxy:
        client = redis.Redis(port=proxy.port)
        proxy.stall()    # bytes are held back; the client times out
        proxy.resume()   # held bytes flow again
        proxy.cut()      # every open connection closed, both sides

Each connection has two pump threads, one a direction; each pump owns its two sockets' reads
and writes, and the thread that cuts only shuts sockets down (which wakes the pumps) and waits
for the pumps to close them: a socket is never closed under a thread still using its number.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

#: Most bytes one read takes off a socket.
CHUNK_BYTES = 64 * 1024
#: How often blocked threads look at the proxy's state (a cut, a stop) again.
POLL_S = 0.05
#: Longest wait for a connection's threads to finish after it is cut.
JOIN_TIMEOUT_S = 5.0
#: How long the proxy tries to reach its target for each new connection.
CONNECT_TIMEOUT_S = 2.0
#: Slices a second when trickling: bytes go out in steps of rate/10, a tenth of a second apart.
TRICKLE_STEPS_PER_S = 10


class Mode(Enum):
    PASS = "pass"
    STALL = "stall"
    TRICKLE = "trickle"
    #: After ``cut(refuse_new=True)``: new connections are closed on arrival.
    REFUSE = "refuse"


class Direction(Enum):
    CLIENT_TO_SERVER = "client→server"
    SERVER_TO_CLIENT = "server→client"


@dataclass
class _Link:
    """One proxied connection: the client's socket, the server's, and their pump threads."""

    client: socket.socket
    server: socket.socket
    threads: list[threading.Thread] = field(default_factory=list)
    cut: bool = False
    #: Directions whose source has ended (EOF or error); the link is done when both have.
    ended: set[Direction] = field(default_factory=set)

    def shut_down(self) -> None:
        """Wake both pumps and send each peer its end of stream (FIN); the pumps close."""
        self.cut = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host:target_port``, with faults switched on and
    off at runtime (:meth:`stall`, :meth:`trickle`, :meth:`cut`, :meth:`cut_after`,
    :meth:`resume`). Use :func:`running_fault_proxy`, or :meth:`start` and :meth:`close`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._changed = threading.Condition()
        self._mode = Mode.PASS
        self._bytes_per_s = 0
        self._cut_after: int | None = None
        self._links: list[_Link] = []
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy-accept")
        #: Connections proxied to the target.
        self.connections_accepted = 0
        #: Connections closed on arrival (``cut(refuse_new=True)``) or whose target was down.
        self.connections_refused = 0
        self.bytes_client_to_server = 0
        self.bytes_server_to_client = 0

    # Addresses ----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def url(self, scheme: str, path: str = "") -> str:
        """``scheme://127.0.0.1:port`` + ``path``, e.g. ``url("redis", "/12")``."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        with self._changed:
            return len(self._links)

    # Faults -------------------------------------------------------------------------------

    def resume(self) -> None:
        """Pass bytes through again: held bytes flow, new connections are taken again."""
        self._set_mode(Mode.PASS)

    def stall(self) -> None:
        """Keep every connection open but forward nothing (bytes wait in the sockets) until
        :meth:`resume`; new connections are accepted and stalled too."""
        self._set_mode(Mode.STALL)

    def trickle(self, bytes_per_s: int) -> None:
        """Forward at most about ``bytes_per_s`` bytes a second in each direction of each
        connection, in slices a tenth of that a tenth of a second apart."""
        if bytes_per_s < 1:
            raise ValueError("trickle needs at least 1 byte per second; use stall()")
        self._set_mode(Mode.TRICKLE, bytes_per_s)

    def cut(self, *, refuse_new: bool = False) -> None:
        """Close every open connection now, both sides, and return once they are closed.
        ``refuse_new``: close new connections on arrival too, until :meth:`resume`; otherwise
        the forwarding mode is left as it was."""
        with self._changed:
            links = list(self._links)
            if refuse_new:
                self._mode = Mode.REFUSE
            self._changed.notify_all()
        for link in links:
            link.shut_down()
        _join(link_thread for link in links for link_thread in link.threads)

    def cut_after(self, n_bytes: int) -> None:
        """Let ``n_bytes`` more bytes through from server to client (over all connections),
        then cut the connection that carries the next one: an answer cut short. One shot."""
        if n_bytes < 0:
            raise ValueError("n_bytes must be 0 or more")
        with self._changed:
            self._cut_after = n_bytes

    def wait_until(self, condition: Callable[[FaultProxy], bool], timeout_s: float = 5.0) -> bool:
        """Poll ``condition(self)`` until it holds (True) or ``timeout_s`` passes (False): the
        counters move just after the bytes are sent, so a test that has read an answer may
        look at them a moment before they are counted."""
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S / 5)
        return True

    # Life cycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def close(self) -> None:
        """Cut every connection, stop accepting, and wait for every thread to end."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._acceptor.is_alive():
            self._acceptor.join(JOIN_TIMEOUT_S)
        self._listener.close()
        self.cut()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Internals ----------------------------------------------------------------------------

    def _set_mode(self, mode: Mode, bytes_per_s: int = 0) -> None:
        with self._changed:
            self._mode = mode
            self._bytes_per_s = bytes_per_s
            self._changed.notify_all()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._take(client)

    def _take(self, client: socket.socket) -> None:
        with self._changed:
            refusing = self._mode is Mode.REFUSE
        if refusing:
            self._refuse(client)
            return
        try:
            server = socket.create_connection(
                (self.target_host, self.target_port), timeout=CONNECT_TIMEOUT_S
            )
        except OSError:
            self._refuse(client)
            return
        for sock in (client, server):
            sock.settimeout(POLL_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, server)
        link.threads = [
            threading.Thread(
                target=self._pump, args=(link, direction), name=f"fault-proxy {direction.value}"
            )
            for direction in Direction
        ]
        with self._changed:
            self._links.append(link)
            self.connections_accepted += 1
        for thread in link.threads:
            thread.start()

    def _refuse(self, client: socket.socket) -> None:
        # Linger 0: the close resets the connection, as near a refusal as an accepted one gets.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with self._changed:
            self.connections_refused += 1

    def _pump(self, link: _Link, direction: Direction) -> None:
        source, sink = (
            (link.client, link.server)
            if direction is Direction.CLIENT_TO_SERVER
            else (link.server, link.client)
        )
        clean_end = False
        try:
            while self._wait_while_stalled(link):
                try:
                    data = source.recv(CHUNK_BYTES)
                except TimeoutError:
                    continue
                if not data:
                    clean_end = True
                    break
                if not self._forward(link, direction, sink, data):
                    break
        except OSError:
            pass
        if not clean_end:
            # A reset, a cut or a stop: the other direction has nothing to wait for either.
            link.shut_down()
        self._end(link, direction, sink)

    def _wait_while_stalled(self, link: _Link) -> bool:
        """Block while stalled; False once the link is cut or the proxy stops."""
        with self._changed:
            while self._mode is Mode.STALL and not (link.cut or self._stopping):
                self._changed.wait(POLL_S)
            return not (link.cut or self._stopping)

    def _forward(self, link: _Link, direction: Direction, sink: socket.socket, data: bytes) -> bool:
        """Send ``data`` on, step by step as the mode allows (a stall, a trickle or a
        :meth:`cut_after` that comes in the middle applies to the rest); False: the link ends."""
        rest = memoryview(data)
        while rest:
            step = self._next_step(link, direction, len(rest))
            if step is None:
                return False
            size, cut_now, pause_s = step
            sent = _send_all(sink, rest[:size], link)
            rest = rest[size:]
            with self._changed:
                if direction is Direction.CLIENT_TO_SERVER:
                    self.bytes_client_to_server += sent
                else:
                    self.bytes_server_to_client += sent
                if pause_s and not cut_now:
                    # Woken early by a change of mode, which then applies at once.
                    self._changed.wait(pause_s)
            if cut_now:
                link.shut_down()
                return False
        return True

    def _next_step(
        self, link: _Link, direction: Direction, pending: int
    ) -> tuple[int, bool, float] | None:
        """The next send of at most ``pending`` bytes: its size, whether the link is cut after
        it (:meth:`cut_after`), and the pause after it (a trickle); ``None``: the link ends."""
        with self._changed:  # re-entrant: the stall check and the step see one mode
            if not self._wait_while_stalled(link):
                return None
            size, pause_s = pending, 0.0
            if self._mode is Mode.TRICKLE:
                size = min(pending, max(1, self._bytes_per_s // TRICKLE_STEPS_PER_S))
                pause_s = size / self._bytes_per_s
            if direction is Direction.CLIENT_TO_SERVER or self._cut_after is None:
                return size, False, pause_s
            size = min(size, self._cut_after)
            self._cut_after -= size
            if self._cut_after > 0:
                return size, False, pause_s
            self._cut_after = None
            return size, True, pause_s

    def _end(self, link: _Link, direction: Direction, sink: socket.socket) -> None:
        """This direction is over: pass the end of stream on; the last pump closes the link."""
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self._changed:
            link.ended.add(direction)
            last = len(link.ended) == len(Direction)
            if last and link in self._links:
                self._links.remove(link)
        if last:
            link.client.close()
            link.server.close()


def _send_all(sink: socket.socket, view: memoryview, link: _Link) -> int:
    """``sendall`` that gives up once the link is cut (the peer may never read again); returns
    the bytes sent."""
    total = 0
    while total < len(view) and not link.cut:
        try:
            total += sink.send(view[total:])
        except TimeoutError:
            continue
    return total


def _join(threads: Iterator[threading.Thread]) -> None:
    current = threading.current_thread()
    for thread in threads:
        if thread is not current and thread.is_alive():
            thread.join(JOIN_TIMEOUT_S)


@contextmanager
def running_fault_proxy(target_host: str, target_port: int) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` to ``target_host:target_port``, closed (every connection
    and thread) on exit."""
    with FaultProxy(target_host, target_port) as proxy:
        yield proxy
