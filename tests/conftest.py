"""Fixtures for real components: RabbitMQ and Redis on loopback, an S3 server over HTTP, the API
simulator over HTTP, and a Celery worker running in a thread.

A missing broker skips its tests on a laptop, but fails them under CI (``CI=true``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.local_s3 import LOCAL_AWS_ENV, LocalS3, running_s3_server, upload_files
from simulator.samples import SAMPLE_CLIPS, sample_clip_path
from simulator.testing import RunningSimulator, running_simulator
from tests.services import (
    API_KEY,
    PUBLIC_BUCKET,
    RABBITMQ_URL,
    REDIS_URL,
    SAMPLES_BUCKET,
    require_service,
)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    """A real S3-protocol server over HTTP holding every sample clip twice: privately in
    ``uploads`` (readable only through a presigned URL) and publicly in ``public``.

    Its fake credentials are put in this test process's environment for the session, where the
    workers that tests run in threads find them through boto3's usual chain.
    """
    with running_s3_server() as s3, pytest.MonkeyPatch.context() as env:
        for name, value in LOCAL_AWS_ENV.items():
            env.setenv(name, value)
        samples = [
            (f"clips/{clip.filename}", sample_clip_path(name))
            for name, clip in SAMPLE_CLIPS.items()
        ]
        upload_files(s3, SAMPLES_BUCKET, samples)
        upload_files(s3, PUBLIC_BUCKET, samples, public=True)
        yield s3


@pytest.fixture(scope="session")
def s3_endpoint(local_s3: LocalS3) -> str:
    return local_s3.endpoint_url


@pytest.fixture(scope="session")
def api_sim() -> Iterator[RunningSimulator]:
    with running_simulator(api_key=API_KEY) as sim:
        yield sim


@pytest.fixture
def sim(api_sim: RunningSimulator) -> Iterator[RunningSimulator]:
    """The session's simulator, with stats, faults and scripts cleared for this test."""
    api_sim.reset()
    yield api_sim
    api_sim.reset()


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    return sample_clip_path("valid_mp4").parent
