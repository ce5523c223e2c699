"""Several broker URLs, the nodes of one cluster, separated by ';': the worker, the producer and
the results consumer each fail over to a node that answers. (One real node here: the first URL
names a port nothing listens on, as a node that is down.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.processes import free_port
from producers import KlingVideo, Producer
from simulator.testing import RunningSimulator
from tests.integration.stack import Stack, running_stack, stack_settings
from tests.services import API_KEY, STATE_REDIS_URL

pytestmark = [pytest.mark.rabbitmq]


@pytest.fixture
def cluster_stack(rabbitmq_url: str, sim: RunningSimulator, s3_endpoint: str) -> Iterator[Stack]:
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    settings = stack_settings(
        f"{down};{rabbitmq_url}", sim, s3_endpoint, API_KEY, redis_url=STATE_REDIS_URL
    )
    with running_stack(settings, sim) as stack:
        yield stack


def test_every_process_fails_over_past_a_node_that_is_down(cluster_stack: Stack) -> None:
    cluster_stack.sim.add_video("v-cluster", "t-cluster", duration_ms=5000)
    with Producer(cluster_stack.settings) as producer:
        job_ids = [
            producer.submit(KlingVideo(video_id="v-cluster", task_id="t-cluster")) for _ in range(5)
        ]

    results = cluster_stack.results(job_ids)

    assert all(result.status == "succeeded" for result in results.values())
