"""Fixtures for real components: RabbitMQ and Redis on loopback, an S3 server over HTTP, the API
simulator over HTTP, and a Celery worker running in a thread.

A missing broker skips its tests on a laptop, but fails them under CI (``CI=true``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.local_s3 import running_s3_server, upload_files
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
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server over HTTP holding every sample clip twice: privately in
    ``uploads`` (readable only through a presigned URL) and publicly in ``public``."""
    with running_s3_server() as endpoint:
        samples = [
            (f"clips/{clip.filename}", sample_clip_path(name))
            for name, clip in SAMPLE_CLIPS.items()
        ]
        upload_files(endpoint, SAMPLES_BUCKET, samples)
        upload_files(endpoint, PUBLIC_BUCKET, samples, public=True)
        yield endpoint


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
