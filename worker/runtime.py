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
from worker.accounts import Account, load_accounts
from worker.backoff import Backoff
from worker.coordination.accounts import AccountLane, AccountPool
from worker.coordination.outcomes import JobLease
from worker.coordination.store import Coordination
from worker.handler import JobHandler
from worker.pipeline import Pipeline
from worker.preflight import Preflight
from worker.publisher import ResultPublisher
from worker.sources import SourceResolver
from worker.upstream.auth import credentials_for
from worker.upstream.client import KlingClient


@dataclass
class Runtime:
    settings: Settings
    coordination: Coordination
    handler: JobHandler

    @classmethod
    def build(cls, settings: Settings, *, stopping: threading.Event | None = None) -> Runtime:
        """Build the process's resources and start renewing its leases (:meth:`close` stops)."""
        # The accounts file first: a bad one stops the worker before anything is connected.
        accounts = load_accounts(settings)
        stopping = stopping or threading.Event()
        coordination = Coordination.from_settings(settings, stopping=stopping)
        pipeline = Pipeline(
            resolver=SourceResolver.from_settings(settings),
            accounts=account_pool(accounts, coordination, settings),
            backoff=Backoff(
                base_s=settings.kling_backoff_base_seconds,
                max_s=settings.kling_backoff_max_seconds,
            ),
            max_attempts=settings.kling_max_attempts,
            stopping=stopping,
            preflight=Preflight.from_settings(settings) if settings.preflight_clips else None,
            public_url_hosts=not settings.allow_private_video_hosts,
        )
        handler = JobHandler(
            pipeline=pipeline,
            publisher=ResultPublisher(connect(settings), pool_size=settings.worker_concurrency),
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
        self.handler.pipeline.accounts.close()
        if self.handler.pipeline.preflight is not None:
            self.handler.pipeline.preflight.close()
        self.handler.publisher.close()
        self.coordination.close()


def account_pool(
    accounts: tuple[Account, ...], coordination: Coordination, settings: Settings
) -> AccountPool:
    """One lane per account: its own client (base URL, keys), breaker and fleet-wide limiter."""
    return AccountPool(
        [
            AccountLane(
                account.name,
                account_client(account, settings),
                breaker=coordination.breaker_for(account.name),
                limiter=coordination.limiter_for(
                    account.name,
                    max_concurrency=account.max_concurrency,
                    max_rate=account.max_rate,
                ),
                max_concurrency=account.max_concurrency,
            )
            for account in accounts
        ]
    )


def account_client(account: Account, settings: Settings) -> KlingClient:
    """The HTTP client that calls as ``account``."""
    return KlingClient(
        base_url=account.base_url,
        credentials=credentials_for(
            api_key=account.api_key.get_secret_value() if account.api_key else "",
            access_key=account.access_key or "",
            secret_key=account.secret_key.get_secret_value() if account.secret_key else "",
        ),
        timeout_s=settings.kling_timeout_seconds,
        pool_size=settings.worker_concurrency,
    )
