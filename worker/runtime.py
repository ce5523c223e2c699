"""The long-lived resources of one worker process: built when the worker starts, closed at
shutdown.

Building asks each dependency once (the shared store answers, the S3 endpoint is a URL boto3
accepts), so a misconfigured worker stops at start with a :class:`~worker.errors.ConfigurationError`
that says what is wrong, instead of failing its first job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from contract.settings import Settings
from contract.topology import connect
from worker.backoff import Backoff
from worker.coordination.outcomes import JobLease
from worker.coordination.store import Coordination
from worker.handler import JobHandler
from worker.pipeline import Pipeline
from worker.preflight import Preflight
from worker.publisher import ResultPublisher
from worker.sources import SourceResolver
from worker.upstream.client import KlingClient


@dataclass
class Runtime:
    settings: Settings
    coordination: Coordination
    handler: JobHandler

    @classmethod
    def build(cls, settings: Settings, *, stopping: threading.Event | None = None) -> Runtime:
        """Build the process's resources and start renewing its leases (:meth:`close` stops)."""
        stopping = stopping or threading.Event()
        coordination = Coordination.from_settings(settings, stopping=stopping)
        pipeline = Pipeline(
            resolver=SourceResolver.from_settings(settings),
            client=KlingClient.from_settings(settings),
            backoff=Backoff(
                base_s=settings.kling_backoff_base_seconds,
                max_s=settings.kling_backoff_max_seconds,
            ),
            max_attempts=settings.kling_max_attempts,
            breaker=coordination.breaker,
            stopping=stopping,
            limiter=coordination.limiter,
            preflight=Preflight.from_settings(settings) if settings.preflight_clips else None,
        )
        handler = JobHandler(
            pipeline=pipeline,
            publisher=ResultPublisher(connect(settings), pool_size=settings.worker_concurrency),
            outcomes=coordination.outcomes,
            # Short, and renewed while the job runs: a dead worker's jobs run again in seconds.
            lease=JobLease(coordination.outcomes),
            allow_http=settings.allow_http_video_urls,
        )
        coordination.start()
        return cls(settings=settings, coordination=coordination, handler=handler)

    @property
    def pipeline(self) -> Pipeline:
        return self.handler.pipeline

    @property
    def publisher(self) -> ResultPublisher:
        return self.handler.publisher

    def close(self) -> None:
        self.handler.pipeline.client.close()
        if self.handler.pipeline.preflight is not None:
            self.handler.pipeline.preflight.close()
        self.handler.publisher.close()
        self.coordination.close()
