"""``kling-queue-exporter`` and the workers' exporters, scraped over HTTP while real worker
processes drain a backlog on RabbitMQ: what an autoscaler and an on-call person would read."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from contract.names import DEAD_LETTER_QUEUE, JOB_QUEUE
from contract.topology import JOB_EXCHANGE, connect
from producers import Producer, iter_results
from tests.ops.fleet import Fleet, Samples, scrape, value

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]

#: Jobs in the backlog, submitted in two halves; the fleet's cap on calls in flight.
BACKLOG, CALL_LIMIT = 40, 5
#: How long the two workers may take to drain it (each call answers after 300 ms).
DRAIN_TIMEOUT_S = 90.0
JOB = {"queue": JOB_QUEUE}
DEAD = {"queue": DEAD_LETTER_QUEUE}
DEFAULT = {"account": "default"}
#: The exporter's cache period in these tests: a scrape after it sees the broker anew.
CACHE_S = 0.2


def fresh(url: str) -> Samples:
    """A scrape of ``url`` once the exporter's cached answer is stale."""
    time.sleep(CACHE_S * 1.5)
    return scrape(url)


def jobs(count: int, first: int, age_s: float = 0.0) -> list[dict[str, object]]:
    submitted = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat()
    return [
        {
            "job_id": f"backlog-{first + index}",
            "source": {"kind": "kling", "video_id": "vid-backlog", "task_id": "task-backlog"},
            "submitted_at": submitted,
        }
        for index in range(count)
    ]


def publish_garbage(fleet: Fleet) -> None:
    """A message that is not a job: the workers set it aside as a dead letter."""
    with connect(fleet.settings) as connection:
        connection.Producer().publish(
            b"\x80\x04K\x01.",
            exchange=JOB_EXCHANGE,
            routing_key=JOB_QUEUE,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            declare=[],
        )


def results_published(samples: list[Samples], status: str) -> float:
    return sum(
        value(each, "kling_jobs_total", status=status, error_type="") or 0 for each in samples
    )


def test_the_backlog_grows_then_drains_and_the_metrics_show_it(fleet: Fleet) -> None:
    fleet.sim.add_video("vid-backlog", "task-backlog", duration_ms=5000)
    fleet.sim.set_faults(latency_ms=300)
    limits = {"KLING_MAX_CONCURRENCY": str(CALL_LIMIT)}
    with fleet.exporter(cache_s=CACHE_S, **limits) as exporter:
        # An idle queue: nothing waiting, nobody consuming.
        idle = scrape(exporter)
        assert value(idle, "kling_queue_ready_messages", **JOB) == 0
        assert value(idle, "kling_queue_consumers", **JOB) == 0
        assert value(idle, "kling_queue_oldest_message_age_seconds", **JOB) == 0
        assert value(idle, "kling_fleet_call_limit", **DEFAULT) == CALL_LIMIT
        assert value(idle, "kling_shared_store_probe_success") == 1

        # The backlog grows while no worker runs, and its oldest job ages.
        with Producer(fleet.settings) as producer:
            producer.submit_many(jobs(BACKLOG // 2, 0, age_s=30))
            half = fresh(exporter)
            producer.submit_many(jobs(BACKLOG // 2, BACKLOG // 2))
        publish_garbage(fleet)
        full = fresh(exporter)
        time.sleep(1.5)
        later = fresh(exporter)
        assert value(half, "kling_queue_ready_messages", **JOB) == BACKLOG // 2
        assert value(full, "kling_queue_ready_messages", **JOB) == BACKLOG + 1
        first_age = value(full, "kling_queue_oldest_message_age_seconds", **JOB)
        later_age = value(later, "kling_queue_oldest_message_age_seconds", **JOB)
        assert first_age is not None
        assert later_age is not None
        assert first_age >= 30
        assert later_age >= first_age + 1

        # Two workers drain it; the scrapes see consumers, unacked jobs and calls in flight.
        with fleet.workers(2, concurrency=4, **limits) as workers:
            seen: list[tuple[Samples, list[Samples]]] = []
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline:
                queue, own = scrape(exporter), [scrape(worker.metrics_url) for worker in workers]
                seen.append((queue, own))
                drained = value(queue, "kling_queue_ready_messages", **JOB) == 0
                if drained and results_published(own, "succeeded") == BACKLOG:
                    break
                time.sleep(0.2)
            settled, settled_own = fresh(exporter), [scrape(w.metrics_url) for w in workers]

    ready = [value(queue, "kling_queue_ready_messages", **JOB) for queue, _ in seen]
    unacked = [
        sum(value(each, "kling_worker_unacked_jobs") or 0 for each in own) for _, own in seen
    ]
    in_flight = [value(queue, "kling_fleet_calls_in_flight", **DEFAULT) or 0 for queue, _ in seen]
    assert results_published(settled_own, "succeeded") == BACKLOG, ready
    assert ready[-1] == 0
    assert max(r or 0 for r in ready[: len(ready) // 2 + 1]) > 0  # it drained, it did not vanish
    assert {value(queue, "kling_queue_consumers", **JOB) for queue, _ in seen} >= {2}
    assert max(unacked) > 0
    assert 1 <= max(in_flight) <= CALL_LIMIT
    assert value(settled, "kling_queue_oldest_message_age_seconds", **JOB) == 0
    assert value(settled, "kling_fleet_calls_in_flight", **DEFAULT) == 0
    assert sum(value(each, "kling_worker_unacked_jobs") or 0 for each in settled_own) == 0
    assert value(settled, "kling_dead_letters_waiting", **DEAD) == 1
    delivered = list(iter_results(fleet.settings, idle_timeout_s=1.0))
    assert len(delivered) == BACKLOG


def test_an_account_paused_by_the_breaker_and_a_broker_gone_are_reported(fleet: Fleet) -> None:
    fleet.sim.add_video("vid-backlog", "task-backlog", duration_ms=5000)
    # The account's balance runs out: 1102 opens the fleet's breaker.
    fleet.sim.set_faults(script=["kling:1102"])
    with (
        fleet.exporter(cache_s=CACHE_S) as exporter,
        fleet.workers(1, KLING_CIRCUIT_OPEN_SECONDS="60"),
    ):
        assert value(scrape(exporter), "kling_account_paused", **DEFAULT) == 0
        with Producer(fleet.settings) as producer:
            producer.submit_many(jobs(1, 0))
        (result,) = list(iter_results(fleet.settings, max_results=1, idle_timeout_s=30))
        paused = fresh(exporter)
    assert result.error is not None
    assert result.error.type == "account_blocked"
    assert value(paused, "kling_account_paused", **DEFAULT) == 1

    # A broker that does not answer: the probe says so, and no stale queue numbers are served.
    gone = Fleet("amqp://guest:guest@127.0.0.1:1//", fleet.redis_url, fleet.sim, fleet.workdir)
    with gone.exporter(expect="kling_broker_probe_success 0.0") as exporter:
        down = scrape(exporter)
    assert value(down, "kling_queue_ready_messages", **JOB) is None
    assert value(down, "kling_shared_store_probe_success") == 1
