"""Writes no job waits for reach Redis in batches, off the caller's thread (real Redis)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from worker.coordination.write_behind import Write, WriteBehind

pytestmark = pytest.mark.redis

#: KEYS: a counter. Adds one and returns the new count.
INCREMENT = "return redis.call('INCR', KEYS[1])"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def counter(client: redis.Redis) -> Iterator[str]:
    key = f"kling:test-write-behind:{uuid.uuid4().hex}"
    yield key
    client.delete(key)


def test_writes_queued_while_a_batch_is_out_go_together_in_the_next(
    client: redis.Redis, counter: str
) -> None:
    writes = WriteBehind(client)
    script = client.register_script(INCREMENT)
    first_answered = threading.Event()
    go_on = threading.Event()

    def hold_the_sender(reply: Any) -> None:
        first_answered.set()
        go_on.wait(10)

    try:
        # Given the sender busy with a first write (its callback runs on the sender's thread)
        writes.send(Write(script, [counter], [], done=hold_the_sender))
        assert first_answered.wait(10)

        # When 50 more are queued meanwhile, from several threads
        def send_ten() -> None:
            for _ in range(10):
                writes.send(Write(script, [counter], []))

        senders = [threading.Thread(target=send_ten) for _ in range(5)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert int(client.get(counter) or 0) == 1
        go_on.set()
        # Then all of them arrive, in one more pipeline
        assert writes.flush(10)
        assert int(client.get(counter) or 0) == 51
        assert writes.batches_sent == 2
    finally:
        go_on.set()
        writes.close()


def test_each_write_is_told_its_reply(client: redis.Redis, counter: str) -> None:
    writes = WriteBehind(client)
    script = client.register_script(INCREMENT)
    replies: list[int] = []
    try:
        for _ in range(3):
            writes.send(Write(script, [counter], [], done=replies.append))
        assert writes.flush(10)
    finally:
        writes.close()
    assert replies == [1, 2, 3]


def test_a_redis_away_costs_the_writes_but_not_the_caller() -> None:
    # Nothing listens on port 1: every connection is refused.
    away = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    writes = WriteBehind(away)
    script = away.register_script(INCREMENT)
    replies: list[Any] = []
    try:
        writes.send(Write(script, ["kling:test-write-behind:away"], [], done=replies.append))
        assert writes.flush(10)
    finally:
        writes.close()
    assert len(replies) == 1
    assert isinstance(replies[0], redis.ConnectionError)
    assert writes.batches_sent == 0


def test_close_sends_what_is_queued_and_later_writes_go_at_once(
    client: redis.Redis, counter: str
) -> None:
    writes = WriteBehind(client)
    script = client.register_script(INCREMENT)
    for _ in range(20):
        writes.send(Write(script, [counter], []))
    writes.close()
    assert int(client.get(counter) or 0) == 20
    # After close no thread is left to send: the write is made on the caller's thread.
    writes.send(Write(script, [counter], []))
    assert int(client.get(counter) or 0) == 21
