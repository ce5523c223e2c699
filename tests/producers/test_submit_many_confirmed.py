"""``submit_many`` on RabbitMQ: every job arrives, broker-confirmed, and a refusal is loud."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from kombu.entity import Queue

from contract.names import JOB_QUEUE, TASK_NAME
from contract.settings import Settings
from contract.topology import JOB_EXCHANGE, connect, job_queue
from producers import Producer
from producers.errors import PublishNotConfirmed

pytestmark = pytest.mark.rabbitmq

KLING_JOB = {
    "source": {"kind": "kling", "video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}
}
#: A queue bound beside the job queue that refuses publishes once it holds this many.
OVERFLOW_QUEUE = "kling.test.overflow"
OVERFLOW_LIMIT = 10


@pytest.fixture
def settings(rabbitmq_url: str) -> Iterator[Settings]:
    """RabbitMQ settings, with the job queue empty before and after."""
    value = Settings(_env_file=None, celery_broker_url=rabbitmq_url)
    purge_jobs(value)
    yield value
    purge_jobs(value)


def purge_jobs(settings: Settings) -> None:
    with connect(settings) as connection:
        queue = job_queue()(connection.default_channel)
        queue.declare()
        queue.purge()


def waiting_jobs(settings: Settings) -> int:
    with connect(settings) as connection:
        declared = job_queue()(connection.default_channel).queue_declare(passive=True)
        return int(declared.message_count)


def test_every_job_of_a_large_batch_arrives_and_the_batch_is_fast(settings: Settings) -> None:
    jobs = [dict(KLING_JOB) for _ in range(5000)]
    with Producer(settings) as producer:
        started = time.perf_counter()
        job_ids = producer.submit_many(jobs)
        elapsed = time.perf_counter() - started
    # Confirmed means queued: the count is right the moment submit_many returns.
    assert waiting_jobs(settings) == len(job_ids) == 5000
    assert len(set(job_ids)) == 5000
    # Far quicker than one confirm at a time (~900/s); the benchmark measures it properly.
    assert elapsed < 5000 / 1500


def test_the_batch_messages_are_the_task_messages_submit_sends(settings: Settings) -> None:
    with Producer(settings) as producer:
        [batch_id] = producer.submit_many([KLING_JOB])
    with connect(settings) as connection:
        message = connection.SimpleQueue(job_queue()).get(timeout=5)
        headers, body = message.headers, json.loads(message.body)
        message.ack()
    assert (headers["task"], headers["id"], headers["root_id"]) == (TASK_NAME, batch_id, batch_id)
    assert message.properties["delivery_mode"] == 2
    assert message.content_type == "application/json"
    args, kwargs, _ = body
    assert args == []
    assert kwargs["job"]["job_id"] == batch_id
    assert kwargs["job"]["source"] == KLING_JOB["source"]


def test_a_job_the_broker_refuses_fails_the_batch(settings: Settings) -> None:
    # Given a second queue on the job route that refuses publishes past 10 messages
    overflow = Queue(
        OVERFLOW_QUEUE,
        JOB_EXCHANGE,
        routing_key=JOB_QUEUE,
        durable=False,
        auto_delete=False,
        queue_arguments={"x-max-length": OVERFLOW_LIMIT, "x-overflow": "reject-publish"},
    )
    with connect(settings) as connection:
        overflow(connection.default_channel).declare()
    try:
        # When a batch of 50 jobs is submitted
        with Producer(settings) as producer, pytest.raises(PublishNotConfirmed) as refused:
            producer.submit_many([dict(KLING_JOB) for _ in range(50)])
        # Then the broker's nacks are reported, naming how many jobs it refused
        assert "nacked" in str(refused.value)
        assert "40 of 50" in str(refused.value)
    finally:
        with connect(settings) as connection:
            overflow(connection.default_channel).delete()
