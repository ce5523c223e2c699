"""A whole pipeline for integration tests: a real worker (in a thread) on a real broker, the
simulator over HTTP, S3 over HTTP, a real producer and a real result consumer."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from celery.contrib.testing.worker import start_worker
from pydantic import SecretStr

from contract.names import TASK_NAME
from contract.settings import Settings
from contract.topology import purge_queues
from producers import KlingVideo, Producer, Result, S3Object, VideoUrl, iter_results
from simulator.testing import RunningSimulator
from worker.app import WorkerApp, create_app

#: Worker threads of the in-test worker.
TEST_CONCURRENCY = 8


def stack_settings(
    broker_url: str | None, sim: RunningSimulator, s3_endpoint: str, api_key: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "celery_broker_url": broker_url,
        "kling_api_base_url": f"{sim.base_url}/kling",
        "kling_api_key": SecretStr(api_key),
        "kling_timeout_seconds": 5.0,
        "kling_max_attempts": 4,
        "kling_backoff_base_seconds": 0.01,
        "kling_backoff_max_seconds": 0.05,
        "s3_endpoint_url": s3_endpoint,
        "allow_http_video_urls": True,
        "allow_private_video_hosts": True,
        "worker_concurrency": TEST_CONCURRENCY,
        # In-thread workers share the test process: no metrics exporter on a fixed port.
        "metrics_port": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def clear_fleet_state(settings: Settings) -> None:
    """Forget recorded outcomes, leases and an open circuit breaker from earlier tests."""
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url)
        client.flushdb()
        client.close()


@dataclass
class Stack:
    settings: Settings
    app: WorkerApp
    sim: RunningSimulator

    def submit(
        self, source: KlingVideo | S3Object | VideoUrl, metadata: dict[str, Any] | None = None
    ) -> str:
        with Producer(self.settings) as producer:
            return producer.submit(source, metadata=metadata)

    def send_raw_task(self, task_id: str, **kwargs: Any) -> None:
        """Send a task message the way a careless producer would, skipping our validation."""
        self.app.send_task(TASK_NAME, kwargs=kwargs, task_id=task_id)

    def results(
        self, job_ids: list[str], timeout_s: float = 30.0, *, allow_repeats: bool = False
    ) -> dict[str, Result]:
        """Consume results until every job has one; fails on a missing or a doubled result
        (unless ``allow_repeats``: a job submitted twice gets two)."""
        seen: Counter[str] = Counter()
        found: dict[str, Result] = {}
        deadline = time.monotonic() + timeout_s
        while set(job_ids) - set(found) and time.monotonic() < deadline:
            for result in iter_results(self.settings, idle_timeout_s=0.5):
                seen[result.job_id] += 1
                found[result.job_id] = result
                if not set(job_ids) - set(found):
                    break
        missing = set(job_ids) - set(found)
        assert not missing, f"no result within {timeout_s} s for {sorted(missing)}"
        if allow_repeats:
            return {job_id: found[job_id] for job_id in job_ids}
        # Anything arriving a little later would be a second result for one job.
        for result in iter_results(self.settings, idle_timeout_s=0.3):
            seen[result.job_id] += 1
        doubled = {job_id: n for job_id, n in seen.items() if n > 1}
        assert not doubled, f"more than one result for {doubled}"
        return {job_id: found[job_id] for job_id in job_ids}

    def result(
        self, job_id: str, timeout_s: float = 30.0, *, allow_repeats: bool = False
    ) -> Result:
        return self.results([job_id], timeout_s, allow_repeats=allow_repeats)[job_id]


@contextmanager
def running_stack(settings: Settings, sim: RunningSimulator) -> Iterator[Stack]:
    purge_queues(settings)
    app = create_app(settings)
    with start_worker(
        app,
        pool="threads",
        concurrency=TEST_CONCURRENCY,
        perform_ping_check=False,
        shutdown_timeout=30.0,
        loglevel="WARNING",
    ):
        yield Stack(settings=settings, app=app, sim=sim)
    app.close_runtime()
