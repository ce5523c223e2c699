"""The fault proxy against an echo server of the test's own, and against the real Redis."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.fault_proxy import FaultProxy, running_fault_proxy

#: How long a test waits for something that should happen (a generous bound, not a measure).
EVENTUALLY_S = 10.0
#: How long a test listens for bytes that must not come.
QUIET_S = 0.3
#: Redis database of these tests (the others use 0 and 1).
REDIS_DB = 12


class EchoServer:
    """Sends back whatever each connection sends it, until that connection ends."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, name="echo-accept")]

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._echo, args=(conn,), name="echo")
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        with conn:
            while not self._stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                with contextlib.suppress(OSError):
                    conn.sendall(data)

    def __enter__(self) -> EchoServer:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(EVENTUALLY_S)
        self._listener.close()


@pytest.fixture
def echo_proxy() -> Iterator[FaultProxy]:
    with EchoServer() as echo, running_fault_proxy("127.0.0.1", echo.port) as proxy:
        yield proxy


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=EVENTUALLY_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes, or fewer if the connection ends first."""
    received = b""
    while len(received) < size:
        chunk = sock.recv(size - len(received))
        if not chunk:
            break
        received += chunk
    return received


def until_closed(sock: socket.socket) -> bytes:
    """Every byte that comes until the proxy ends the connection (a FIN or a reset)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def ends_at_once(proxy: FaultProxy) -> bool:
    """A new connection is reset (in its handshake or just after) or closed with no byte."""
    try:
        with connect(proxy) as sock:
            sock.sendall(b"anyone?")
            return until_closed(sock) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def nothing_arrives(sock: socket.socket) -> bool:
    sock.settimeout(QUIET_S)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(EVENTUALLY_S)
    return False


def test_bytes_pass_through_intact_and_are_counted(echo_proxy: FaultProxy) -> None:
    payload = os.urandom(512 * 1024)
    with connect(echo_proxy) as client:
        # Sent from a thread: the echo comes back while the rest is still going out.
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        echoed = receive(client, len(payload))
        sender.join(EVENTUALLY_S)

    assert echoed == payload
    assert echo_proxy.connections_accepted == 1
    assert echo_proxy.wait_until(lambda p: p.bytes_server_to_client == len(payload))
    assert echo_proxy.bytes_client_to_server == len(payload)


def test_stall_holds_bytes_back_until_resume(echo_proxy: FaultProxy) -> None:
    with connect(echo_proxy) as open_before:
        open_before.sendall(b"warm")
        assert receive(open_before, 4) == b"warm"
        echo_proxy.stall()

        open_before.sendall(b"held")
        with connect(echo_proxy) as opened_during:
            opened_during.sendall(b"also held")
            assert echo_proxy.wait_until(lambda p: p.connections_accepted == 2)
            assert nothing_arrives(open_before)
            assert nothing_arrives(opened_during)
            assert echo_proxy.bytes_client_to_server == 4

            echo_proxy.resume()
            assert receive(open_before, 4) == b"held"
            assert receive(opened_during, 9) == b"also held"


def test_trickle_slows_each_direction_to_its_rate(echo_proxy: FaultProxy) -> None:
    payload = os.urandom(1000)
    echo_proxy.trickle(500)
    with connect(echo_proxy) as client:
        started = time.monotonic()
        client.sendall(payload)
        echoed = receive(client, len(payload))
        took_s = time.monotonic() - started

    assert echoed == payload
    # 1,000 bytes at 500 B/s take about 2 s one way (a slower machine only takes longer).
    assert took_s >= 1.5


def test_cut_closes_open_connections_and_lets_new_ones_in(echo_proxy: FaultProxy) -> None:
    with connect(echo_proxy) as first, connect(echo_proxy) as second:
        for client in (first, second):
            client.sendall(b"ping")
            assert receive(client, 4) == b"ping"

        echo_proxy.cut()

        assert until_closed(first) == b""
        assert until_closed(second) == b""
        assert echo_proxy.open_connections == 0
    with connect(echo_proxy) as after:
        after.sendall(b"again")
        assert receive(after, 5) == b"again"
    assert echo_proxy.connections_accepted == 3


def test_cut_refusing_new_connections_until_resume(echo_proxy: FaultProxy) -> None:
    echo_proxy.cut(refuse_new=True)
    assert ends_at_once(echo_proxy)
    assert echo_proxy.wait_until(lambda p: p.connections_refused == 1)
    assert echo_proxy.connections_accepted == 0

    echo_proxy.resume()
    with connect(echo_proxy) as taken:
        taken.sendall(b"in")
        assert receive(taken, 2) == b"in"


def test_cut_after_cuts_the_next_answer_short_once(echo_proxy: FaultProxy) -> None:
    echo_proxy.cut_after(10)
    with connect(echo_proxy) as client:
        client.sendall(b"x" * 100)
        assert until_closed(client) == b"x" * 10
    with connect(echo_proxy) as later:
        later.sendall(b"y" * 100)
        assert receive(later, 100) == b"y" * 100


def test_close_leaves_no_thread_and_no_listener() -> None:
    with EchoServer() as echo:
        with running_fault_proxy("127.0.0.1", echo.port) as proxy:
            idle = connect(proxy)
            stalled = connect(proxy)
            proxy.stall()
            stalled.sendall(b"held")
            assert proxy.wait_until(lambda p: p.open_connections == 2)
        with idle, stalled:
            assert until_closed(idle) == b""
            assert until_closed(stalled) == b""

    assert not [t for t in threading.enumerate() if t.name.startswith("fault-proxy")]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=EVENTUALLY_S).close()


# Against the real Redis -----------------------------------------------------------------------


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[FaultProxy]:
    with running_fault_proxy("127.0.0.1", 6379) as proxy:
        yield proxy


def redis_client(proxy: FaultProxy) -> redis.Redis:
    """One connection, no retries: each fault reaches the caller as the error it causes."""
    return redis.Redis.from_url(
        proxy.url("redis", f"/{REDIS_DB}"),
        socket_timeout=0.5,
        socket_connect_timeout=EVENTUALLY_S,
        single_connection_client=True,
        retry=Retry(NoBackoff(), 0),
    )


@pytest.mark.redis
def test_redis_ping_passes_through(redis_proxy: FaultProxy) -> None:
    with redis_client(redis_proxy) as client:
        assert client.ping() is True
    assert redis_proxy.connections_accepted == 1
    assert redis_proxy.bytes_client_to_server > 0
    assert redis_proxy.wait_until(lambda p: p.bytes_server_to_client > 0)


@pytest.mark.redis
def test_redis_times_out_while_stalled_and_works_after_resume(redis_proxy: FaultProxy) -> None:
    with redis_client(redis_proxy) as client:
        assert client.ping() is True
        redis_proxy.stall()

        with pytest.raises(redis.TimeoutError):
            client.ping()

        redis_proxy.resume()
        assert client.ping() is True


@pytest.mark.redis
def test_redis_command_after_a_cut_fails_then_reconnects(redis_proxy: FaultProxy) -> None:
    with redis_client(redis_proxy) as client:
        assert client.ping() is True
        redis_proxy.cut()

        with pytest.raises(redis.ConnectionError):
            client.ping()

        assert client.ping() is True
    assert redis_proxy.connections_accepted == 2
