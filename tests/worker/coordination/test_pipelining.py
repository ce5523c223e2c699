"""Many jobs' Redis commands reach Redis together, in order, off the callers' threads, and a
caller that waits gets its own reply (real Redis)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from worker.coordination.pipelining import PipelinedCommands, script_call

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
    key = f"kling:test-pipelining:{uuid.uuid4().hex}"
    yield key
    client.delete(key)


def test_commands_queued_while_a_batch_is_out_go_together_in_the_next(
    client: redis.Redis, counter: str
) -> None:
    commands = PipelinedCommands(client)
    increment = script_call(client.register_script(INCREMENT), [counter], [])
    first_answered = threading.Event()
    go_on = threading.Event()

    def hold_the_sender(reply: Any) -> None:
        first_answered.set()
        go_on.wait(10)

    try:
        # Given the sender busy with a first command (its callback runs on the sender's thread)
        commands.send(increment, done=hold_the_sender)
        assert first_answered.wait(10)

        # When 50 more are queued meanwhile, from several threads
        def send_ten() -> None:
            for _ in range(10):
                commands.send(increment)

        senders = [threading.Thread(target=send_ten) for _ in range(5)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert int(client.get(counter) or 0) == 1
        go_on.set()
        # Then all of them arrive, in one more pipeline
        assert commands.flush(10)
        assert int(client.get(counter) or 0) == 51
        assert commands.batches_sent == 2
    finally:
        go_on.set()
        commands.close()


def test_each_caller_gets_its_own_reply(client: redis.Redis, counter: str) -> None:
    commands = PipelinedCommands(client)
    increment = script_call(client.register_script(INCREMENT), [counter], [])
    replies: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        reply = commands.call(increment)
        with lock:
            replies.append(int(reply))

    try:
        callers = [threading.Thread(target=call) for _ in range(40)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
    finally:
        commands.close()
    # Every count from 1 to 40 was somebody's reply, exactly once.
    assert sorted(replies) == list(range(1, 41))
    assert commands.batches_sent < 40


def test_an_error_redis_answers_is_raised_to_its_caller_only(
    client: redis.Redis, counter: str
) -> None:
    commands = PipelinedCommands(client)
    try:
        client.set(counter, "not a number")
        with pytest.raises(redis.ResponseError):
            commands.call(lambda pipe: pipe.incr(counter))
        assert commands.call(lambda pipe: pipe.get(counter)) == b"not a number"
    finally:
        commands.close()


def test_a_redis_away_is_raised_to_callers_and_costs_the_rest_nothing_but_the_command() -> None:
    # Nothing listens on port 1: every connection is refused.
    away = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    commands = PipelinedCommands(away)
    increment = script_call(away.register_script(INCREMENT), ["kling:test-pipelining:away"], [])
    try:
        commands.send(increment)  # a slot given back: nobody waits, nothing raises
        with pytest.raises(redis.ConnectionError):
            commands.call(increment)
        assert commands.flush(10)
    finally:
        commands.close()
    assert commands.batches_sent == 0


def test_close_sends_what_is_queued_and_later_commands_go_at_once(
    client: redis.Redis, counter: str
) -> None:
    commands = PipelinedCommands(client)
    increment = script_call(client.register_script(INCREMENT), [counter], [])
    for _ in range(20):
        commands.send(increment)
    commands.close()
    assert int(client.get(counter) or 0) == 20
    # After close no thread is left to send: the command runs on the caller's thread.
    assert commands.call(increment) == 21
