"""Enqueueing jobs: Celery task messages (protocol 2, JSON) published with kombu.

The message is the one Celery itself would send for ``kling.init_selection``, with the task id set
to the ``job_id`` and ``kwargsrepr`` (what Flower shows) free of URL signatures.

On RabbitMQ every message is confirmed by the broker. :meth:`Producer.submit` waits for each
confirm (kombu's ``confirm_publish``); :meth:`Producer.submit_many` keeps up to
:data:`CONFIRM_WINDOW` messages unconfirmed on a channel of its own in confirm mode and collects
the broker's acks as they come (one ``basic.ack`` with ``multiple`` covers many), which is some
six times faster, and raises :class:`PublishNotConfirmed` on any nack, timeout or closed channel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import types
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import TracebackType
from typing import Any

import amqp
from celery import Celery
from kombu.connection import Connection
from kombu.messaging import Producer as KombuProducer

from contract.errors import InvalidJobError
from contract.jobs import Job, KlingVideo, S3Object, VideoUrl, complete_job, make_job
from contract.names import JOB_QUEUE, TASK_NAME
from contract.redaction import redact_url
from contract.settings import Settings
from contract.topology import JOB_EXCHANGE, connect, job_queue
from producers.errors import PublishNotConfirmed

JobLike = Job | Mapping[str, Any]

#: Most messages :meth:`Producer.submit_many` leaves unconfirmed before it waits for acks.
CONFIRM_WINDOW = 2000
#: Longest :meth:`Producer.submit_many` waits for the broker to confirm what it has sent.
CONFIRM_TIMEOUT_S = 30.0


logger = logging.getLogger(__name__)

#: Connection attempts after a broker restart before a submit gives up.
RECONNECT_ATTEMPTS = 10


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
        account: str | None = None,
    ) -> str:
        """Enqueue one job and return its ``job_id`` (a fresh UUID4 when none is given).

        ``account`` pins the job to that Kling account of the fleet (a Kling-generated clip
        must be opened by the account that generated it); ``None`` lets the fleet choose.
        """
        job = make_job(
            source,
            job_id=job_id,
            metadata=metadata,
            account=account,
            allow_http=self.settings.allow_http_video_urls,
        )
        self._reconnecting(lambda: self._publish(job))
        return job.job_id

    def submit_many(self, jobs: Iterable[JobLike]) -> list[str]:
        """Validate every job first, then enqueue them all; returns their ``job_id`` in order.

        Items are :class:`Job` objects or job objects as JSON would hold them (``job_id``,
        ``metadata``, ``submitted_at`` and ``account`` optional). One invalid item raises
        :class:`InvalidJobError` naming its position, and nothing is enqueued.
        """
        prepared = [self.prepare(job, position) for position, job in enumerate(jobs, start=1)]
        if self.settings.broker_is_amqp and prepared:
            # After a reconnect the whole batch goes again: jobs are idempotent by job_id.
            self._reconnecting(lambda: self._publish_confirmed(prepared))
        else:
            for job in prepared:
                self._reconnecting(partial(self._publish, job))
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

    def _reconnecting(self, send: Callable[[], None]) -> None:
        """Run ``send``; if the connection turns out dead (the broker restarted since the last
        call), reconnect and run it once more. kombu's own publish retry does not cover opening
        the channel, where a dead socket shows first."""
        try:
            send()
        except self._connection.connection_errors as exc:
            logger.warning("Broker connection lost (%s); reconnecting.", exc)
            self._producer = None
            self._connection.collect()
            self._connection.ensure_connection(max_retries=RECONNECT_ATTEMPTS)
            send()

    def _publish(self, job: Job) -> None:
        self._send(self._kombu_producer(), job, declare=[job_queue()], retry=True)

    def _send(self, producer: KombuProducer, job: Job, *, declare: list[Any], retry: bool) -> None:
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
        producer.publish(
            message.body,
            exchange=JOB_EXCHANGE,
            routing_key=JOB_QUEUE,
            serializer="json",
            headers=message.headers,
            delivery_mode=2,
            declare=declare,
            retry=retry,
            **message.properties,
        )

    def _publish_confirmed(self, jobs: list[Job]) -> None:
        """Publish on a channel of its own in confirm mode, acks collected in windows."""
        self._connection.ensure_connection(max_retries=3)
        channel = self._connection.channel()
        tracker = _Confirms(len(jobs))
        try:
            channel.confirm_select()
            channel.events["basic_ack"].add(tracker.ack)
            channel.events["basic_nack"].add(tracker.nack)
            # The connection's confirm_publish makes every channel wait for each confirm in
            # basic_publish; on this one we publish plainly and collect the confirms ourselves.
            channel.basic_publish = types.MethodType(amqp.Channel.basic_publish, channel)
            job_queue()(channel).declare()
            producer = KombuProducer(channel)
            for sent, job in enumerate(jobs, start=1):
                self._send(producer, job, declare=[], retry=False)
                if sent - tracker.confirmed >= CONFIRM_WINDOW:
                    self._await_confirms(tracker, until=sent - CONFIRM_WINDOW // 2)
            self._await_confirms(tracker, until=len(jobs))
        except PublishNotConfirmed:
            raise
        except (amqp.ChannelError, amqp.ConnectionError, OSError) as exc:
            raise PublishNotConfirmed(
                f"the broker confirmed {tracker.confirmed} of {len(jobs)} jobs before "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            _close_quietly(channel)

    def _await_confirms(self, tracker: _Confirms, *, until: int) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        while tracker.confirmed < until:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishNotConfirmed(
                    f"the broker confirmed {tracker.confirmed} of {tracker.total} jobs "
                    f"within {CONFIRM_TIMEOUT_S:g} s"
                )
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if tracker.nacked:
            raise PublishNotConfirmed(
                f"the broker refused (nacked) {tracker.nacked} of {tracker.total} jobs"
            )

    def _kombu_producer(self) -> KombuProducer:
        if self._producer is None:
            self._producer = KombuProducer(self._connection.default_channel)
        return self._producer


class _Confirms:
    """Which of ``total`` messages (delivery tags 1..total) the broker has acked or nacked."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._done = bytearray(total + 2)
        self._done[0] = 1
        #: Every tag up to here is settled (acked or nacked).
        self.confirmed = 0
        self.nacked = 0

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def nack(self, delivery_tag: int, multiple: bool) -> None:
        first = self.confirmed + 1 if multiple else delivery_tag
        self.nacked += sum(1 for tag in range(first, delivery_tag + 1) if not self._done[tag])
        self._settle(delivery_tag, multiple)

    def _settle(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            low = self.confirmed + 1
            self._done[low : delivery_tag + 1] = b"\x01" * max(0, delivery_tag + 1 - low)
        else:
            self._done[delivery_tag] = 1
        while self.confirmed < self.total and self._done[self.confirmed + 1]:
            self.confirmed += 1


def _close_quietly(channel: Any) -> None:
    with contextlib.suppress(amqp.ChannelError, amqp.ConnectionError, OSError):
        channel.close()


def _shown(wire: dict[str, Any]) -> dict[str, Any]:
    """The job as monitoring may show it: any signed URL without its signature."""
    source = wire.get("source") or {}
    if "video_url" in source:
        return {**wire, "source": {**source, "video_url": redact_url(source["video_url"])}}
    return wire
