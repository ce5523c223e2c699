"""``kling-jobs status`` and ``kling-jobs dead-letters``, run as an operator runs them, against
real worker processes, RabbitMQ and the fleet's Redis."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from contract.messages import raw_body
from contract.names import DEAD_LETTER_REASON_HEADER, JOB_QUEUE
from contract.topology import JOB_EXCHANGE, connect, dead_letter_queue, job_queue
from producers import KlingVideo, Producer, iter_results
from tests.ops.fleet import Fleet

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]

#: How long the simulator sits on the slow job's call: long enough to ask while it runs.
SLOW_CALL_S = 6


def statuses(fleet: Fleet, *job_ids: str) -> list[dict[str, Any]]:
    done = fleet.kling_jobs("status", *job_ids)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_status_answers_for_a_finished_a_running_and_an_unknown_job(fleet: Fleet) -> None:
    fleet.sim.add_video("vid-status", "task-status", duration_ms=5000)
    # The first call answers at once, the second only after SLOW_CALL_S.
    fleet.sim.set_faults(script=["ok", "slow"], slow_seconds=SLOW_CALL_S)
    source = KlingVideo(video_id="vid-status", task_id="task-status")
    with fleet.workers(1), Producer(fleet.settings) as producer:
        finished = producer.submit(source, job_id="status-finished")
        (published,) = list(iter_results(fleet.settings, max_results=1, idle_timeout_s=30))
        slow = producer.submit(source, job_id="status-slow")
        deadline = time.monotonic() + SLOW_CALL_S
        while statuses(fleet, slow)[0]["state"] != "running":
            assert time.monotonic() < deadline, "the slow job never showed as running"
            time.sleep(0.2)

        lines = statuses(fleet, finished, slow, "never-submitted")
        (later,) = list(iter_results(fleet.settings, max_results=1, idle_timeout_s=30))
        (after,) = statuses(fleet, slow)

    assert [line["job_id"] for line in lines] == [finished, slow, "never-submitted"]
    assert [line["state"] for line in lines] == ["recorded", "running", "unknown"]
    assert lines[0]["result"] == published.to_wire()
    assert lines[1]["result"] is None
    assert lines[2]["result"] is None
    assert after == {"job_id": slow, "state": "recorded", "result": later.to_wire()}


def test_status_exits_1_when_the_store_cannot_be_reached(fleet: Fleet) -> None:
    closed = fleet.kling_jobs("status", "some-job", REDIS_URL="redis://127.0.0.1:1/0")
    unset = fleet.kling_jobs("status", "some-job", REDIS_URL="")

    assert closed.returncode == 1
    assert "cannot be reached" in closed.stderr
    assert closed.stdout == ""
    assert unset.returncode == 1
    assert "REDIS_URL is not set" in unset.stderr


#: Two messages that are not jobs: a pickled body, and a JSON task no worker knows.
PICKLED = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."
UNKNOWN_TASK = json.dumps([[], {"x": 1}, {"callbacks": None}]).encode()
UNKNOWN_HEADERS = {"task": "someone.elses_task", "id": "dl-unknown", "lang": "py", "retries": 0}


def publish_not_jobs(fleet: Fleet) -> None:
    with connect(fleet.settings) as connection:
        producer = connection.Producer()
        producer.publish(
            PICKLED,
            exchange=JOB_EXCHANGE,
            routing_key=JOB_QUEUE,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"id": "dl-pickle"},
            declare=[job_queue()],
        )
        producer.publish(
            UNKNOWN_TASK,
            exchange=JOB_EXCHANGE,
            routing_key=JOB_QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
            headers=UNKNOWN_HEADERS,
        )


def queue_depths(fleet: Fleet) -> tuple[int, int]:
    """Messages waiting on the job queue and on the dead-letter queue."""
    with connect(fleet.settings) as connection:
        channel = connection.default_channel
        jobs = job_queue()(channel).queue_declare(passive=True).message_count
        dead = dead_letter_queue()(channel).queue_declare().message_count
        return int(jobs), int(dead)


def take_jobs(fleet: Fleet) -> list[Any]:
    """Every message on the job queue, acked, as the broker hands them out."""
    with connect(fleet.settings) as connection:
        queue = job_queue()(connection.default_channel)
        taken = []
        while (message := queue.get(no_ack=True)) is not None:
            taken.append(message)
        return taken


def listed(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    done = fleet.kling_jobs("dead-letters", "list", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_dead_letters_are_listed_in_place_then_replayed_byte_for_byte(fleet: Fleet) -> None:
    # Given a worker that set two messages aside, then stopped
    with fleet.workers(1):
        publish_not_jobs(fleet)
        deadline = time.monotonic() + 30
        while queue_depths(fleet) != (0, 2):
            assert time.monotonic() < deadline, queue_depths(fleet)
            time.sleep(0.2)

    # When they are listed (twice, and once with --max): they stay, in their order
    first, again, one = listed(fleet), listed(fleet), listed(fleet, "--max", "1")
    assert first == again
    assert one == first[:1]
    assert queue_depths(fleet) == (0, 2)
    pickled, unknown = first
    assert "untrusted content of type pickle" in pickled["reason"]
    assert pickled["body_encoding"] == "base64"
    assert base64.b64decode(pickled["body"]) == PICKLED
    assert pickled["content_type"] == "application/x-python-serialize"
    assert "unknown task name 'someone.elses_task'" in unknown["reason"]
    assert unknown["body_encoding"] == "text"
    assert unknown["body"] == UNKNOWN_TASK.decode()
    assert unknown["headers"][DEAD_LETTER_REASON_HEADER] == unknown["reason"]

    # A dry run counts without moving; a reason picks one letter
    dry = fleet.kling_jobs("dead-letters", "replay", "--reason", "unknown task", "--dry-run")
    assert (dry.returncode, dry.stdout.strip()) == (
        0,
        f"would move 1 dead letter(s) to {JOB_QUEUE}",
    )
    assert queue_depths(fleet) == (0, 2)
    moved = fleet.kling_jobs("dead-letters", "replay", "--reason", "unknown task")
    assert (moved.returncode, moved.stdout.strip()) == (0, f"moved 1 dead letter(s) to {JOB_QUEUE}")
    assert queue_depths(fleet) == (1, 1)
    assert listed(fleet) == [pickled]

    # Then the rest, and the job queue holds the original messages byte for byte
    rest = fleet.kling_jobs("dead-letters", "replay", "--max", "5")
    assert rest.stdout.strip() == f"moved 1 dead letter(s) to {JOB_QUEUE}"
    assert queue_depths(fleet) == (2, 0)
    replayed_unknown, replayed_pickled = take_jobs(fleet)
    assert raw_body(replayed_unknown.body, replayed_unknown.content_encoding) == UNKNOWN_TASK
    assert replayed_unknown.content_type == "application/json"
    assert replayed_unknown.content_encoding == "utf-8"
    assert replayed_unknown.headers == UNKNOWN_HEADERS
    assert raw_body(replayed_pickled.body, replayed_pickled.content_encoding) == PICKLED
    assert replayed_pickled.content_type == "application/x-python-serialize"
    assert replayed_pickled.content_encoding == "binary"
    assert replayed_pickled.headers == {"id": "dl-pickle"}


def test_dead_letters_exit_1_when_the_broker_cannot_be_reached(fleet: Fleet) -> None:
    done = fleet.kling_jobs(
        "dead-letters", "list", CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:1//"
    )

    assert done.returncode == 1
    assert "broker cannot be reached" in done.stderr
