"""``kling-worker`` as compose runs it: one process holds hundreds of slow calls at once.

A real ``kling-worker`` process with its default concurrency, on a RabbitMQ virtual host of its
own, ``REDIS_URL`` set, the simulator answering after 3 s and the S3 server over HTTP. Half the
jobs are S3 objects, pre-flight on: boto3, PyAV's ranged reads, redis-py, kombu's publishes and
the calls all wait cooperatively, so none of them holds the others up.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from contract import keys
from contract.settings import Settings
from contract.topology import purge_queues
from devstack.processes import ensure_vhost, process_env, running, wait_for_worker, worker_command
from producers import KlingVideo, Producer, S3Object, iter_results, make_job
from simulator.samples import SAMPLE_CLIPS
from simulator.testing import RunningSimulator
from tests.services import API_KEY, SAMPLES_BUCKET, STATE_REDIS_URL
from worker.app import BROKER_PUBLISH_CONNECTIONS
from worker.publisher import MAX_PUBLISH_CONNECTIONS

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]

VHOST = "kling-green-test"
DEAD_WORKER_VHOST = "kling-green-dead-worker-test"
NODE = "green@localhost"
JOBS = 300
LATENCY_MS = 3000
#: ``celery -A worker worker`` runs 200 threads: it could never hold more calls than this.
THREADS_DEFAULT = 200
#: Connections this test opens itself while it watches: its producer and its result consumer.
TEST_CONNECTIONS = 2


def worker_env(settings: Settings, sim: RunningSimulator, **extra: str) -> dict[str, str]:
    return process_env(
        str(settings.celery_broker_url),
        KLING_API_BASE_URL=f"{sim.base_url}/kling",
        KLING_API_KEY=API_KEY,
        KLING_MAX_CONCURRENCY="1000",
        REDIS_URL=STATE_REDIS_URL,
        METRICS_PORT="0",
        **extra,
    )


def test_one_process_holds_hundreds_of_slow_calls_s3_jobs_included(
    rabbitmq_url: str,
    redis_url: str,
    sim: RunningSimulator,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    settings = Settings(_env_file=None, celery_broker_url=ensure_vhost(VHOST))
    purge_queues(settings)
    sim.add_video("green-video", "green-task")
    sim.set_faults(latency_ms=LATENCY_MS)
    env = worker_env(
        settings,
        sim,
        S3_ENDPOINT_URL=s3_endpoint,
        ALLOW_HTTP_VIDEO_URLS="true",
        ALLOW_PRIVATE_VIDEO_HOSTS="true",
    )
    clip = S3Object(bucket=SAMPLES_BUCKET, key=f"clips/{SAMPLE_CLIPS['valid_mp4'].filename}")
    video = KlingVideo(video_id="green-video", task_id="green-task")
    command = worker_command(NODE, concurrency=None, green=True)
    with running("kling-worker", command, env, tmp_path) as worker:
        # Given kling-worker with its default concurrency (no -c, no WORKER_CONCURRENCY)
        wait_for_worker(worker, str(settings.celery_broker_url), NODE)
        # When 300 jobs that each take 2 s upstream arrive at once, half of them S3 objects
        with Producer(settings) as producer:
            jobs = [make_job(source) for _ in range(JOBS // 2) for source in (clip, video)]
            job_ids = set(producer.submit_many(jobs))
        results = list(iter_results(settings, max_results=JOBS, idle_timeout_s=30.0))

    # Then every job succeeded, once, with far more calls in flight than threads could hold
    assert sorted(r.job_id for r in results) == sorted(job_ids)
    assert {r.status for r in results} == {"succeeded"}, [r.error for r in results if r.error]
    assert sum(isinstance(r.source, S3Object) for r in results) == JOBS // 2
    assert sim.stats()["peak_in_flight"] > THREADS_DEFAULT


def test_a_dead_workers_hundreds_of_jobs_wait_on_a_few_broker_connections(
    rabbitmq_url: str, redis_url: str, sim: RunningSimulator, tmp_path: Path
) -> None:
    # Given 1,000 jobs whose leases a dead worker still holds for 3 s more
    settings = Settings(_env_file=None, celery_broker_url=ensure_vhost(DEAD_WORKER_VHOST))
    purge_queues(settings)
    state = redis.Redis.from_url(STATE_REDIS_URL)
    job_ids = [f"green-dead-{uuid.uuid4().hex}" for _ in range(1000)]
    video = KlingVideo(video_id="kling-demo-video-1", task_id="kling-demo-task-1")
    command = worker_command(NODE, concurrency=None, green=True)
    with running("kling-worker", command, worker_env(settings, sim), tmp_path) as worker:
        wait_for_worker(worker, str(settings.celery_broker_url), NODE)
        with state.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.set(keys.lease(job_id), "dead-worker:1:x", px=3000)
            pipe.execute()
        peak = PeakConnections(DEAD_WORKER_VHOST)
        # When they all reach the worker at once, and every one must go back to wait
        with peak, Producer(settings) as producer:
            producer.submit_many([make_job(video, job_id=job_id) for job_id in job_ids])
            results = list(iter_results(settings, max_results=len(job_ids), idle_timeout_s=30.0))
    state.close()

    # Then they wait on the publishing pool's few connections, not one each, and once the dead
    # worker's leases lapse every job is answered, once
    opened = peak.seen - peak.before
    assert opened <= BROKER_PUBLISH_CONNECTIONS + MAX_PUBLISH_CONNECTIONS + TEST_CONNECTIONS
    assert sorted(r.job_id for r in results) == sorted(job_ids)
    assert {r.status for r in results} == {"succeeded"}


class PeakConnections:
    """AMQP connections open on ``vhost`` (``rabbitmqctl``): ``before`` the block, and the most
    ``seen`` while it runs."""

    def __init__(self, vhost: str) -> None:
        self._vhost = vhost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.before = 0
        self.seen = 0

    def __enter__(self) -> PeakConnections:
        self.before = self._count()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.seen = max(self.seen, self._count())
            time.sleep(0.2)

    def _count(self) -> int:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "-p", self._vhost, "name"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return len(listed.stdout.splitlines())
