"""``kling-worker`` as compose runs it: one process holds hundreds of slow calls at once.

A real ``kling-worker`` process with its default concurrency, on a RabbitMQ virtual host of its
own, ``REDIS_URL`` set, the simulator answering after 2 s and the S3 server over HTTP. Half the
jobs are S3 objects, pre-flight on: boto3, PyAV's ranged reads, redis-py, kombu's publishes and
the calls all wait cooperatively, so none of them holds the others up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.settings import Settings
from contract.topology import purge_queues
from devstack.processes import ensure_vhost, process_env, running, wait_for_worker, worker_command
from producers import KlingVideo, Producer, S3Object, iter_results, make_job
from simulator.samples import SAMPLE_CLIPS
from simulator.testing import RunningSimulator
from tests.services import API_KEY, SAMPLES_BUCKET, STATE_REDIS_URL

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]

VHOST = "kling-green-test"
NODE = "green@localhost"
JOBS = 300
LATENCY_MS = 2000
#: ``celery -A worker worker`` runs 200 threads: it could never hold more calls than this.
THREADS_DEFAULT = 200


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
    env = process_env(
        str(settings.celery_broker_url),
        KLING_API_BASE_URL=f"{sim.base_url}/kling",
        KLING_API_KEY=API_KEY,
        KLING_MAX_CONCURRENCY="1000",
        REDIS_URL=STATE_REDIS_URL,
        S3_ENDPOINT_URL=s3_endpoint,
        ALLOW_HTTP_VIDEO_URLS="true",
        METRICS_PORT="0",
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
    assert sim.stats()["peak_in_flight"] > 1.2 * THREADS_DEFAULT
