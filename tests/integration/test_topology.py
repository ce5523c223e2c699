"""A worker declares the whole topology at start-up, so no result is dropped for want of a queue."""

from __future__ import annotations

from pathlib import Path

from contract.settings import Settings
from contract.topology import connect, dead_letter_queue, job_queue, result_queue
from devstack.processes import ensure_vhost, process_env, running, wait_for_worker, worker_command

VHOST = "kling-topology-test"
NODE = "topology@localhost"


def test_a_starting_worker_declares_job_result_and_dead_letter_queues(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    broker_url = ensure_vhost(VHOST)
    settings = Settings(_env_file=None, celery_broker_url=broker_url)
    queues = (job_queue(), result_queue(), dead_letter_queue())
    with connect(settings) as connection:
        for queue in queues:
            queue(connection.default_channel).delete()

    env = process_env(broker_url, METRICS_PORT="0")
    with running("worker", worker_command(NODE), env, tmp_path) as worker:
        wait_for_worker(worker, broker_url, NODE)

    with connect(settings) as connection:
        for queue in queues:
            declared = queue(connection.default_channel).queue_declare(passive=True)
            assert declared.queue == queue.name
