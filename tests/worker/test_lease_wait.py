"""A job whose lease another worker holds goes back to wait on the lease-wait queue (a real
RabbitMQ): same task id, a countdown past the holder's lease, counted as a retry, and shown to
Flower without a URL signature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from celery.exceptions import Retry

from contract.settings import Settings
from contract.topology import LEASE_WAIT_QUEUE, connect, purge_queues
from devstack.processes import ensure_vhost
from worker.app import WorkerApp, create_app
from worker.coordination.outcomes import LeaseHeld
from worker.tasks import LEASE_WAIT_JITTER_S, init_selection, wait_for_lease

pytestmark = [pytest.mark.rabbitmq]

VHOST = "kling-lease-wait-test"
SIGNED = "https://cdn.example.com/a.mp4?X-Amz-Signature=abcdef0123456789&X-Amz-Expires=60"
JOB = {"job_id": "wait-1", "source": {"kind": "url", "video_url": SIGNED}}


@pytest.fixture
def app(rabbitmq_url: str) -> Iterator[WorkerApp]:
    settings = Settings(_env_file=None, celery_broker_url=ensure_vhost(VHOST))
    purge_queues(settings)
    app = create_app(settings)
    yield app
    purge_queues(settings)
    app.close()


def test_a_held_job_is_sent_to_wait_with_a_countdown_past_the_lease(app: WorkerApp) -> None:
    task = app.tasks[init_selection.name]
    task.push_request(
        id="wait-1",
        kwargs={"job": JOB},
        retries=0,
        called_directly=False,
        delivery_info={"exchange": "kling.init_selection", "routing_key": "kling.init_selection"},
    )
    try:
        sent = wait_for_lease(task, {"job": JOB}, LeaseHeld("wait-1", retry_in_s=7.5))
    finally:
        task.pop_request()
    assert isinstance(sent, Retry)

    with connect(app.settings) as connection:
        message = connection.default_channel.basic_get(queue=LEASE_WAIT_QUEUE, no_ack=True)
    assert message is not None
    headers = message.properties["application_headers"]
    assert headers["id"] == "wait-1"
    assert headers["retries"] == 1
    eta_in_s = (datetime.fromisoformat(headers["eta"]) - datetime.now(UTC)).total_seconds()
    assert 7.5 + LEASE_WAIT_JITTER_S[0] - 1 <= eta_in_s <= 7.5 + LEASE_WAIT_JITTER_S[1]
    assert "abcdef0123456789" not in headers["kwargsrepr"]
    assert json.loads(headers["kwargsrepr"])["job"]["job_id"] == "wait-1"
    body = json.loads(message.body)
    assert body[1] == {"job": JOB}  # the job itself travels unchanged
