"""The long-lived resources of one worker process, built on first use and closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from producers.broker import connect
from producers.settings import Settings
from worker.backoff import Backoff
from worker.kling_client import KlingClient
from worker.pipeline import Pipeline
from worker.publisher import ResultPublisher
from worker.sources import SourceResolver


@dataclass
class Runtime:
    settings: Settings
    pipeline: Pipeline
    publisher: ResultPublisher

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        pipeline = Pipeline(
            resolver=SourceResolver.from_settings(settings),
            client=KlingClient.from_settings(settings),
            backoff=Backoff(
                base_s=settings.kling_backoff_base_seconds,
                max_s=settings.kling_backoff_max_seconds,
            ),
            max_attempts=settings.kling_max_attempts,
        )
        publisher = ResultPublisher(connect(settings), pool_size=settings.worker_concurrency)
        return cls(settings=settings, pipeline=pipeline, publisher=publisher)

    def close(self) -> None:
        self.pipeline.client.close()
        self.publisher.close()
