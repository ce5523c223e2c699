"""A probe's wall-clock deadline, enforced by cutting the connection it is reading from.

Socket timeouts bound each read, not the whole: a host that sends a byte a second never trips
them. So each probe's :class:`Deadline` is watched by a :class:`Watchdog` (one thread per
:class:`~worker.preflight.check.Preflight`, a greenlet under gevent), which at the deadline
shuts down the socket of the request the probe has in flight. The blocked read then ends at
once: under threads ``shutdown`` wakes a ``recv`` blocked in another thread; under gevent its
socket's ``shutdown`` wakes the greenlet waiting on it.

A socket reaches its deadline through a context variable (thread- and greenlet-local): the
reader sets it around each request (:meth:`Deadline.request`), and the pre-flight's connections
(``connections.py``) hand it their socket (:func:`adopt_socket`).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_IN_FLIGHT: ContextVar[Deadline | None] = ContextVar("preflight_deadline", default=None)


class Deadline:
    """One probe's deadline, all its requests together."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s
        self._lock = threading.Lock()
        #: Sockets of the request in flight (a new connection's, or a reused one's).
        self._sockets: list[socket.socket] = []
        self._cut = False
        self._finished = False

    @property
    def expired(self) -> bool:
        return self._cut or time.monotonic() >= self.at

    def remaining_s(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @contextmanager
    def request(self) -> Iterator[None]:
        """While inside, the sockets this thread's pre-flight connections use are cut at the
        deadline; once out, none is (a pooled socket may serve another probe next)."""
        token = _IN_FLIGHT.set(self)
        try:
            yield
        finally:
            _IN_FLIGHT.reset(token)
            with self._lock:
                self._sockets.clear()

    def adopt(self, sock: socket.socket) -> None:
        with self._lock:
            if self._cut:
                _shut_down(sock)
            elif all(known is not sock for known in self._sockets):
                self._sockets.append(sock)

    def expire(self) -> None:
        """The deadline has passed: cut the request in flight, and any the probe starts later."""
        with self._lock:
            if self._finished:
                return
            self._cut = True
            for sock in self._sockets:
                _shut_down(sock)
            self._sockets.clear()

    def finish(self) -> None:
        """The probe is over: the watchdog leaves it alone."""
        with self._lock:
            self._finished = True
            self._sockets.clear()

    @property
    def finished(self) -> bool:
        return self._finished


def adopt_socket(sock: socket.socket | None) -> None:
    """Put ``sock`` under the deadline of the request this thread has in flight, if any."""
    deadline = _IN_FLIGHT.get()
    if deadline is not None and sock is not None:
        deadline.adopt(sock)


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown, for a TLS socket too: the TLS socket's own drops its TLS state
    # under the thread reading it. The descriptor stays open for its owner to close.
    with contextlib.suppress(OSError):  # not connected yet, or already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """Expires deadlines on time: one thread, started on demand, ended when none is pending."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._pending: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._running = False

    def arm(self, timeout_s: float) -> Deadline:
        """A deadline ``timeout_s`` from now, watched until it passes or is finished."""
        deadline = Deadline(timeout_s)
        with self._wake:
            heapq.heappush(self._pending, (deadline.at, next(self._order), deadline))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="preflight-watchdog", daemon=True).start()
            self._wake.notify()
        return deadline

    def _run(self) -> None:
        while (due := self._next_due()) is not None:
            due.expire()

    def _next_due(self) -> Deadline | None:
        """The next deadline to pass, once it has; None when nothing is pending (the thread
        ends: decided under the lock, so :meth:`arm` starts another when needed)."""
        with self._wake:
            while self._pending:
                at, _, deadline = self._pending[0]
                wait_s = at - time.monotonic()
                if deadline.finished or wait_s <= 0:
                    heapq.heappop(self._pending)
                    if not deadline.finished:
                        return deadline
                else:
                    self._wake.wait(wait_s)
            self._running = False
            return None
