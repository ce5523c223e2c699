"""Warm shutdown (SIGTERM): calls in flight finish and are acked; jobs waiting to retry go back.

Each test runs a real ``celery -A worker worker`` process on a RabbitMQ virtual host of its own.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.settings import Settings
from contract.topology import connect, job_queue, purge_queues
from devstack.processes import (
    Process,
    ensure_vhost,
    process_env,
    running,
    wait_for_worker,
    worker_command,
)
from producers import KlingVideo, Producer, Result, iter_results
from simulator.testing import RunningSimulator
from tests.services import API_KEY

VHOST = "kling-shutdown-test"
NODE = "shutdown@localhost"
VIDEO = KlingVideo(video_id="shutdown-video", task_id="shutdown-task")


@pytest.fixture
def broker_settings(rabbitmq_url: str) -> Settings:
    settings = Settings(_env_file=None, celery_broker_url=ensure_vhost(VHOST))
    purge_queues(settings)
    return settings


@pytest.fixture
def worker(broker_settings: Settings, sim: RunningSimulator, tmp_path: Path) -> Iterator[Process]:
    sim.add_video(VIDEO.video_id, VIDEO.task_id)
    env = process_env(
        str(broker_settings.celery_broker_url),
        KLING_API_BASE_URL=f"{sim.base_url}/kling",
        KLING_API_KEY=API_KEY,
        KLING_MAX_ATTEMPTS="10",
        KLING_BACKOFF_BASE_SECONDS="4",
        WORKER_CONCURRENCY="4",
        METRICS_PORT="0",
    )
    with running("worker", worker_command(NODE), env, tmp_path) as process:
        wait_for_worker(process, str(broker_settings.celery_broker_url), NODE)
        yield process


def wait_for_calls(sim: RunningSimulator, count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sim.stats()["calls"] < count:
        assert time.monotonic() < deadline, f"the API saw fewer than {count} calls"
        time.sleep(0.05)


def stop(process: Process) -> float:
    """SIGTERM, and how long the worker took to exit."""
    started = time.monotonic()
    process.popen.send_signal(signal.SIGTERM)
    process.popen.wait(timeout=60)
    return time.monotonic() - started


def queued_jobs(settings: Settings) -> int:
    with connect(settings) as connection:
        declared = job_queue()(connection.default_channel).queue_declare(passive=True)
        return int(declared.message_count)


def drain_results(settings: Settings) -> list[Result]:
    return list(iter_results(settings, idle_timeout_s=1.0))


def test_sigterm_lets_the_call_in_flight_finish_and_publishes_its_result(
    worker: Process, broker_settings: Settings, sim: RunningSimulator
) -> None:
    sim.set_faults(latency_ms=2500)
    with Producer(broker_settings) as producer:
        job_id = producer.submit(VIDEO)
    wait_for_calls(sim, 1)

    stop(worker)

    (result,) = drain_results(broker_settings)
    assert result.job_id == job_id
    assert result.status == "succeeded"
    assert queued_jobs(broker_settings) == 0


def test_sigterm_hands_a_job_waiting_to_retry_back_to_the_queue(
    worker: Process, broker_settings: Settings, sim: RunningSimulator
) -> None:
    sim.set_faults(script=["kling:5001"] * 10)
    with Producer(broker_settings) as producer:
        producer.submit(VIDEO)
    wait_for_calls(sim, 1)

    took_s = stop(worker)

    # Its backoff (2-4 s, then 4-8 s, ...) was cut short, not waited out.
    assert took_s < 10
    assert drain_results(broker_settings) == []
    assert queued_jobs(broker_settings) == 1
    assert sim.stats()["calls"] == 1
