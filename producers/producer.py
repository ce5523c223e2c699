"""Enqueueing jobs: Celery task messages (protocol 2, JSON) published with kombu.

The message is the one Celery itself would send for ``kling.init_selection``, with the task id set
to the ``job_id`` and ``kwargsrepr`` (what Flower shows) free of URL signatures.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from celery import Celery
from kombu.connection import Connection
from kombu.messaging import Producer as KombuProducer

from producers.broker import JOB_EXCHANGE, connect, job_queue
from producers.jobs import (
    InvalidJobError,
    Job,
    KlingVideo,
    S3Object,
    VideoUrl,
    complete_job,
    make_job,
)
from producers.names import JOB_QUEUE, TASK_NAME
from producers.redaction import redact_url
from producers.settings import Settings

JobLike = Job | Mapping[str, Any]


class Producer:
    """Submits jobs over one broker connection; use as a context manager, or call :meth:`close`."""

    def __init__(self, settings: Settings, connection: Connection | None = None) -> None:
        self.settings = settings
        self._connection = connection or connect(settings)
        # Used only to build protocol-2 task messages exactly as Celery does; it never connects.
        self._messages = Celery("producers", set_as_current=False).amqp
        self._origin = f"kling-producer@{socket.gethostname()}"
        self._producer: KombuProducer | None = None

    @classmethod
    def from_env(cls) -> Producer:
        """A producer configured from the environment and ``.env`` (CONTRACT.md, "Settings")."""
        return cls(Settings())

    def submit(
        self,
        source: KlingVideo | S3Object | VideoUrl,
        job_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Enqueue one job and return its ``job_id`` (a fresh UUID4 when none is given)."""
        job = make_job(
            source,
            job_id=job_id,
            metadata=metadata,
            allow_http=self.settings.allow_http_video_urls,
        )
        self._publish(job)
        return job.job_id

    def submit_many(self, jobs: Iterable[JobLike]) -> list[str]:
        """Validate every job first, then enqueue them all; returns their ``job_id`` in order.

        Items are :class:`Job` objects or job objects as JSON would hold them (``job_id``,
        ``metadata`` and ``submitted_at`` optional). One invalid item raises
        :class:`InvalidJobError` naming its position, and nothing is enqueued.
        """
        prepared = [self.prepare(job, position) for position, job in enumerate(jobs, start=1)]
        for job in prepared:
            self._publish(job)
        return [job.job_id for job in prepared]

    def prepare(self, job: JobLike, position: int = 1) -> Job:
        """A validated :class:`Job` from a job object (``job_id``, ``submitted_at`` filled in)."""
        if isinstance(job, Job):
            return job
        if not isinstance(job, Mapping):
            raise InvalidJobError(f"job {position}: expected a JSON object")
        try:
            return complete_job(job, allow_http=self.settings.allow_http_video_urls)
        except InvalidJobError as exc:
            raise InvalidJobError(f"job {position}: {exc}") from None

    def close(self) -> None:
        self._connection.release()

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _publish(self, job: Job) -> None:
        wire = job.to_wire()
        message = self._messages.as_task_v2(
            job.job_id,
            TASK_NAME,
            kwargs={"job": wire},
            origin=self._origin,
            ignore_result=True,
            argsrepr="()",
            kwargsrepr=json.dumps({"job": _shown(wire)}),
        )
        self._kombu_producer().publish(
            message.body,
            exchange=JOB_EXCHANGE,
            routing_key=JOB_QUEUE,
            serializer="json",
            headers=message.headers,
            delivery_mode=2,
            declare=[job_queue()],
            retry=True,
            **message.properties,
        )

    def _kombu_producer(self) -> KombuProducer:
        if self._producer is None:
            self._producer = KombuProducer(self._connection.default_channel)
        return self._producer


def _shown(wire: dict[str, Any]) -> dict[str, Any]:
    """The job as monitoring may show it: any signed URL without its signature."""
    source = wire.get("source") or {}
    if "video_url" in source:
        return {**wire, "source": {**source, "video_url": redact_url(source["video_url"])}}
    return wire
