"""The one HTTP call, against a hand-written upstream on loopback that answers in ways the API's
contract does not allow: each ends in a typed error, never in an exception the job path does
not know (which once acked a job with no result)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from worker.errors import BadGatewayAnswer, KlingWorkerError, UpstreamDown
from worker.upstream.auth import BearerKey
from worker.upstream.client import KlingClient

SUCCESS = (
    b'{"code":0,"message":"","request_id":"req-1","data":{"status":0,"session_id":"s-1",'
    b'"width":WIDTH,"height":720,"fps":30}}'
)


def http_answer(status: str, body: bytes, *, length: int | None = None) -> bytes:
    """A raw HTTP/1.1 answer whose Content-Length may lie (``length``)."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@contextmanager
def upstream(answer: bytes) -> Iterator[str]:
    """A server that reads one request per connection, sends ``answer`` and closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/kling"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def call(answer: bytes) -> Callable[[], object]:
    def run() -> object:
        with upstream(answer) as base_url:
            client = KlingClient(
                base_url=base_url, credentials=BearerKey("sk-test"), timeout_s=5, pool_size=1
            )
            try:
                return client.init_selection({"video_id": "v", "task_id": "t"})
            finally:
                client.close()

    return run


def raised(answer: bytes) -> KlingWorkerError:
    with pytest.raises(KlingWorkerError) as caught:
        call(answer)()
    return caught.value


def test_a_well_formed_success_opens_a_session() -> None:
    opened = call(http_answer("200 OK", SUCCESS.replace(b"WIDTH", b"1280")))()
    assert getattr(opened, "session_id", None) == "s-1"


def test_a_body_cut_short_by_the_connection_is_a_retryable_outage() -> None:
    # 200, Content-Length: 500, 11 bytes, then the connection closes.
    error = raised(http_answer("200 OK", b'{"code": 0,', length=500))
    assert isinstance(error, UpstreamDown)
    assert "cut short" in error.message


@pytest.mark.parametrize(
    "width", [b"1e999", b"-1e999", b"1" * 400], ids=["1e999", "-1e999", "400 digits"]
)
def test_a_success_with_a_number_out_of_range_is_a_bad_gateway_answer(width: bytes) -> None:
    error = raised(http_answer("200 OK", SUCCESS.replace(b"WIDTH", width)))
    assert isinstance(error, BadGatewayAnswer)


def test_an_answer_nested_5000_deep_is_a_bad_gateway_answer() -> None:
    deep = b'{"code":0,"data":' + b"[" * 5000 + b"]" * 5000 + b"}"
    error = raised(http_answer("200 OK", deep))
    assert isinstance(error, BadGatewayAnswer)


def test_a_5xx_whose_body_is_out_of_range_is_retried() -> None:
    error = raised(http_answer("503 Service Unavailable", b'{"code":5000,"x":1e999}'))
    assert isinstance(error, UpstreamDown)
