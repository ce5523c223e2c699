"""The long-lived resources of one worker process, built on first use and closed at shutdown."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis

from producers.broker import connect, longest_job_s
from producers.settings import Settings
from worker.backoff import Backoff
from worker.circuit_breaker import BreakerState, LocalBreaker, RedisBreaker
from worker.idempotency import JobLease, LocalOutcomeStore, OutcomeStore, RedisOutcomeStore
from worker.kling_client import KlingClient
from worker.limits import limiter_from_settings
from worker.pipeline import Pipeline
from worker.publisher import ResultPublisher
from worker.sources import SourceResolver

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    pipeline: Pipeline
    publisher: ResultPublisher
    outcomes: OutcomeStore
    lease: JobLease
    redis: redis.Redis | None

    @classmethod
    def build(cls, settings: Settings, *, stopping: threading.Event | None = None) -> Runtime:
        shared = _redis_client(settings)
        outcomes: OutcomeStore
        breaker: BreakerState
        if shared is None:
            logger.warning(
                "REDIS_URL is not set: idempotency, the circuit breaker and call limits hold "
                "within this worker process only. Set REDIS_URL to share them across the fleet."
            )
            outcomes = LocalOutcomeStore()
            breaker = LocalBreaker(open_s=settings.kling_circuit_open_seconds)
        else:
            outcomes = RedisOutcomeStore(shared)
            breaker = RedisBreaker(shared, open_s=settings.kling_circuit_open_seconds)
        pipeline = Pipeline(
            resolver=SourceResolver.from_settings(settings),
            client=KlingClient.from_settings(settings),
            backoff=Backoff(
                base_s=settings.kling_backoff_base_seconds,
                max_s=settings.kling_backoff_max_seconds,
            ),
            max_attempts=settings.kling_max_attempts,
            breaker=breaker,
            stopping=stopping or threading.Event(),
            limiter=limiter_from_settings(settings, client=shared),
        )
        return cls(
            settings=settings,
            pipeline=pipeline,
            publisher=ResultPublisher(connect(settings), pool_size=settings.worker_concurrency),
            outcomes=outcomes,
            # A job is never run by two workers at once for as long as one run can last.
            lease=JobLease(outcomes, lease_s=longest_job_s(settings)),
            redis=shared,
        )

    def close(self) -> None:
        self.pipeline.client.close()
        self.publisher.close()
        if self.redis is not None:
            self.redis.close()


def _redis_client(settings: Settings) -> redis.Redis | None:
    if not settings.redis_url:
        return None
    # A blocking pool: a thread waits for a free connection instead of failing.
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.worker_concurrency + 16,
        timeout=30,
        socket_timeout=10,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)
