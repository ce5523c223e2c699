"""The queue probe against real brokers: counts, the oldest job's age, and that peeking at the
head of the queue leaves every job where it was.

On brokers no other test's worker consumes from: the fleet virtual host, and for the Redis broker
the shared-state database (which holds no lists)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from contract.names import DEAD_LETTER_QUEUE, JOB_QUEUE
from contract.settings import Settings
from contract.topology import connect, declare_topology, purge_queues
from producers import Producer
from tests.services import STATE_REDIS_URL
from worker.ops.queue_probe import AmqpProbe, ProbeFailed, RedisBrokerProbe, job_time, probe_for

#: Seconds the oldest job's computed age may differ from its real one (clock reads, probing).
AGE_TOLERANCE_S = 5.0


def jobs_submitted(ago_s: list[float]) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    return [
        {
            "job_id": f"probe-{index}",
            "source": {"kind": "kling", "video_id": "v", "task_id": "t"},
            "submitted_at": (now - timedelta(seconds=ago)).isoformat(),
        }
        for index, ago in enumerate(ago_s)
    ]


def task_ids_in_queue_order(settings: Settings) -> list[str]:
    """Take every job off the queue (acked), in the order the broker hands them out."""
    ids = []
    with connect(settings) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue=JOB_QUEUE, no_ack=True)) is not None:
            ids.append(message.headers["id"])
        channel.close()
    return ids


@pytest.fixture
def amqp_settings(fleet_broker_url: str) -> Iterator[Settings]:
    settings = Settings(_env_file=None, celery_broker_url=fleet_broker_url)
    purge_queues(settings)
    yield settings
    purge_queues(settings)


@pytest.fixture
def redis_broker_settings(redis_url: str) -> Iterator[Settings]:
    settings = Settings(_env_file=None, celery_broker_url=STATE_REDIS_URL)
    purge_queues(settings)
    yield settings
    purge_queues(settings)


@pytest.mark.rabbitmq
def test_rabbitmq_counts_ready_jobs_and_ages_the_oldest(amqp_settings: Settings) -> None:
    with Producer(amqp_settings) as producer:
        producer.submit_many(jobs_submitted([600, 300, 10]))
    probe = AmqpProbe(amqp_settings)
    try:
        first, second = probe.snapshot(), probe.snapshot()
    finally:
        probe.close()

    for snapshot in (first, second):
        assert snapshot.ready == 3
        assert snapshot.consumers == 0
        assert snapshot.dead_letters == 0
        assert snapshot.oldest_age_s == pytest.approx(600, abs=AGE_TOLERANCE_S)


@pytest.mark.rabbitmq
def test_peeking_at_the_head_keeps_the_queue_order(amqp_settings: Settings) -> None:
    with Producer(amqp_settings) as producer:
        job_ids = producer.submit_many(jobs_submitted([50, 40, 30, 20, 10]))
    probe = AmqpProbe(amqp_settings)
    try:
        for _ in range(5):
            probe.snapshot()
    finally:
        probe.close()

    assert task_ids_in_queue_order(amqp_settings) == job_ids


@pytest.mark.rabbitmq
def test_an_empty_queue_has_age_zero_and_dead_letters_are_counted(amqp_settings: Settings) -> None:
    with connect(amqp_settings) as connection:
        declare_topology(connection)
        producer = connection.Producer()
        for body in (b"\x80\x04K\x01.", b"not json"):
            producer.publish(body, routing_key=DEAD_LETTER_QUEUE, content_type="x/y")
    probe = probe_for(amqp_settings)
    try:
        snapshot = probe.snapshot()
    finally:
        probe.close()

    assert (snapshot.ready, snapshot.oldest_age_s, snapshot.dead_letters) == (0, 0.0, 2)


@pytest.mark.rabbitmq
def test_a_broker_that_does_not_answer_fails_the_probe() -> None:
    # A closed port on loopback: nothing listens there.
    settings = Settings(_env_file=None, celery_broker_url="amqp://guest:guest@127.0.0.1:1//")
    probe = AmqpProbe(settings)
    with pytest.raises(ProbeFailed):
        probe.snapshot()
    probe.close()


@pytest.mark.redis
def test_a_redis_broker_is_probed_in_place(redis_broker_settings: Settings) -> None:
    with Producer(redis_broker_settings) as producer:
        job_ids = producer.submit_many(jobs_submitted([120, 60]))
    probe = probe_for(redis_broker_settings)
    assert isinstance(probe, RedisBrokerProbe)
    try:
        snapshot = probe.snapshot()
    finally:
        probe.close()

    assert snapshot.ready == 2
    assert snapshot.consumers is None  # Redis keeps no consumer count
    assert snapshot.oldest_age_s == pytest.approx(120, abs=AGE_TOLERANCE_S)
    assert len(job_ids) == 2


def test_the_job_time_is_its_submitted_at_and_nothing_else_counts() -> None:
    body = b'[[], {"job": {"job_id": "a", "submitted_at": "2026-11-24T10:00:00Z"}}, {}]'

    assert job_time(body) == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert job_time(b"[[], {}, {}]") is None
    assert job_time(b"\x80\x04K\x01.") is None
    assert job_time(b'[[], {"job": {"submitted_at": "2026-11-24T10:00:00"}}, {}]') is None


def test_the_embedded_broker_has_no_probe() -> None:
    with pytest.raises(ValueError, match="amqp"):
        probe_for(Settings(_env_file=None))
