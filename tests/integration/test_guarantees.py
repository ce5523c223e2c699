"""Nothing lost, nothing doubled: idempotency by job_id, dead letters, the circuit breaker."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest
from kombu.connection import Connection
from kombu.message import Message

from contract.names import DEAD_LETTER_REASON_HEADER, JOB_QUEUE, TASK_NAME
from contract.topology import JOB_EXCHANGE, connect, dead_letter_queue, lease_wait_queue
from producers import Producer, S3Object, iter_results
from tests.integration.stack import Stack
from tests.services import SAMPLES_BUCKET

CLIP = S3Object(bucket=SAMPLES_BUCKET, key="clips/valid_mp4.mp4")


def test_a_resubmitted_job_id_gets_the_recorded_outcome_without_a_second_call(
    stack: Stack,
) -> None:
    with Producer(stack.settings) as producer:
        producer.submit(CLIP, job_id="upl-once")
        first = stack.result("upl-once")
        producer.submit(CLIP, job_id="upl-once")
        second = stack.result("upl-once")

    assert first.status == "succeeded"
    assert second.session_id == first.session_id
    assert stack.sim.stats()["calls"] == 1


def test_the_same_job_id_arriving_twice_at_once_calls_the_api_once_and_answers_once(
    stack: Stack,
) -> None:
    # Given a job submitted twice at once, against an API answering in 0.5 s
    stack.sim.set_faults(latency_ms=500)
    with Producer(stack.settings) as producer:
        producer.submit(CLIP, job_id="upl-twice")
        producer.submit(CLIP, job_id="upl-twice")

    # Then one copy calls the API and publishes the result; the other finds the lease held,
    # waits apart (no thread), and ends without a call or a result of its own.
    result = stack.result("upl-twice", allow_repeats=True)
    wait_until_no_copy_waits(stack)
    assert result.status == "succeeded"
    assert [late.job_id for late in iter_results(stack.settings, idle_timeout_s=1.0)] == []
    assert stack.sim.stats()["calls"] == 1


def wait_until_no_copy_waits(stack: Stack, timeout_s: float = 40.0) -> None:
    """Until no job is waiting, scheduled, reserved or running on the worker (twice in a row)."""
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 2:
        assert time.monotonic() < deadline, "a job copy was still waiting"
        inspect = stack.app.control.inspect(timeout=1.0)
        busy = any(
            any((found or {}).values())
            for found in (inspect.scheduled(), inspect.reserved(), inspect.active())
        )
        with connect(stack.settings) as connection:
            waiting = lease_wait_queue()(connection.default_channel).queue_declare()
        quiet = 0 if busy or waiting.message_count else quiet + 1
        time.sleep(0.5)


def test_failures_about_our_account_are_not_remembered(stack: Stack) -> None:
    stack.sim.set_faults(script=["kling:1101"])
    with Producer(stack.settings) as producer:
        producer.submit(CLIP, job_id="upl-blocked")
        blocked = stack.result("upl-blocked")
        stack.sim.reset()
        _reopen_breaker(stack)
        producer.submit(CLIP, job_id="upl-blocked")
        retried = stack.result("upl-blocked")

    assert blocked.error is not None
    assert blocked.error.type == "account_blocked"
    assert retried.status == "succeeded"


def test_an_auth_failure_pauses_calls_and_fails_the_next_jobs_fast(stack: Stack) -> None:
    stack.sim.set_faults(script=["kling:1002"])

    first = stack.result(stack.submit(CLIP))
    rest = stack.results([stack.submit(CLIP) for _ in range(3)])

    assert first.error is not None
    assert first.error.type == "auth_failed"
    for result in rest.values():
        assert result.error is not None
        assert result.error.type == "auth_failed"
        assert "paused" in result.error.message
    assert stack.sim.stats()["calls"] == 1


def take_dead_letter(connection: Connection, timeout_s: float = 20.0) -> Message:
    """The next dead letter, raw: its body is never decoded here either."""
    queue = dead_letter_queue()(connection.default_channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message: Message | None = queue.get(no_ack=True)
        if message is not None:
            return message
        time.sleep(0.05)
    raise AssertionError(f"no dead letter within {timeout_s} s")


def _reopen_breaker(stack: Stack) -> None:
    from tests.integration.stack import clear_fleet_state

    clear_fleet_state(stack.settings)


def _task_headers(task: str = TASK_NAME, task_id: str = "dl-1") -> dict[str, Any]:
    return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}


#: Raw messages that are not jobs, and a fragment of the reason each must be dead-lettered with.
GARBAGE: dict[str, tuple[bytes, str, dict[str, Any], str]] = {
    "pickle": (
        pickle.dumps(((), {"job": {"job_id": "x"}}, {})),
        "application/x-python-serialize",
        _task_headers(),
        "x-python-serialize",
    ),
    "not-json": (b"{this is not json", "application/json", _task_headers(), "decode"),
    "invalid-utf8": (
        b'[[], {"job": "\xff\xfe"}, {}]',
        "application/json",
        _task_headers(),
        "decode",
    ),
    "unknown-task": (
        b'[[], {"job": {}}, {}]',
        "application/json",
        _task_headers("os.system"),
        "os.system",
    ),
    "no-task-header": (b'{"hello": "world"}', "application/json", {}, "no task name"),
    "not-a-task-body": (b'"just a string"', "application/json", _task_headers(), "malformed"),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_messages_that_are_not_jobs_are_dead_lettered_byte_for_byte_with_the_reason(
    stack: Stack, kind: str
) -> None:
    body, content_type, headers, reason = GARBAGE[kind]
    with connect(stack.settings) as connection:
        connection.Producer().publish(
            body,
            exchange=JOB_EXCHANGE,
            routing_key=JOB_QUEUE,
            content_type=content_type,
            content_encoding="binary",
            headers=headers,
        )
        message = take_dead_letter(connection)

    assert message.body == body
    assert message.content_type == content_type
    assert reason in message.headers[DEAD_LETTER_REASON_HEADER]
    # The worker is still up and still working.
    assert stack.result(stack.submit(CLIP)).status == "succeeded"
    assert stack.sim.stats()["calls"] == 1
