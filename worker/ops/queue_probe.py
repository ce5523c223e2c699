"""What the broker holds for the fleet: ready jobs, consumers, the oldest job's age, dead letters.

Asked without RabbitMQ's management plugin, at a cost that does not grow with the queue:

- RabbitMQ: a passive ``queue.declare`` of the job queue and of the dead-letter queue gives the
  ready count and the consumer count. The oldest job's age comes from peeking at the head
  message: ``basic.get`` without ack, read its ``submitted_at``, then ``basic.reject`` with
  requeue, which puts it back in its old place (tests/ops/test_queue_probe.py checks the
  order). The message is then marked redelivered; nothing in the worker acts on that flag.
- Redis: ``LLEN`` of the job list (and of kombu's priority sub-lists), and ``LINDEX -1``, the next
  message to be taken, read in place.

Unacknowledged jobs are not in either answer: each worker process exports how many it holds
(``kling_worker_unacked_jobs``), and their sum is the queue's.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import amqp.exceptions
import redis
from kombu.connection import Connection

from contract import bounded_json
from contract.names import DEAD_LETTER_QUEUE, JOB_QUEUE
from contract.settings import Settings
from contract.topology import connect

logger = logging.getLogger(__name__)

#: Seconds the broker may take to answer one probe.
PROBE_TIMEOUT_S = 5.0
#: kombu's Redis transport keeps priority levels in lists named ``<queue>\x06\x16<level>``.
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)


class ProbeFailed(Exception):
    """Raised when the broker cannot be asked (the exporter reports the probe as down)."""


@dataclass(frozen=True)
class QueueSnapshot:
    """The job queue and the dead-letter queue at one moment."""

    ready: int
    #: Consumers of the job queue; ``None`` where the broker keeps no count (Redis).
    consumers: int | None
    #: Age of the next job to be taken; 0 for an empty queue, ``None`` when it cannot be told.
    oldest_age_s: float | None
    dead_letters: int


class BrokerProbe(Protocol):
    def snapshot(self) -> QueueSnapshot: ...

    def close(self) -> None: ...


def probe_for(settings: Settings) -> BrokerProbe:
    """The probe for ``settings.broker_url``; raises ``ValueError`` for the embedded broker."""
    if settings.broker_is_amqp:
        return AmqpProbe(settings)
    if settings.broker_is_redis:
        return RedisBrokerProbe(settings.broker_url)
    raise ValueError("queue metrics need CELERY_BROKER_URL to be amqp://… or redis://…")


def job_time(body: bytes) -> datetime | None:
    """When a job was submitted: its ``submitted_at``, read from a Celery task message body
    (``[args, {"job": {...}}, embed]``); ``None`` for anything else."""
    try:
        decoded: Any = bounded_json.loads(body)
        submitted = decoded[1]["job"]["submitted_at"]
        stamp = datetime.fromisoformat(submitted)
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return stamp if stamp.tzinfo is not None else None


class _HeadClock:
    """The age of the head message, from its own time, else from when this probe first saw
    that message at the head (a lower bound: foreign producers may send no time)."""

    def __init__(self) -> None:
        self._head: tuple[object, float] | None = None

    def age_s(self, identity: object, stamp: datetime | None) -> float:
        now = time.time()
        if stamp is not None:
            self._head = None
            return max(0.0, now - stamp.timestamp())
        if self._head is None or self._head[0] != identity:
            self._head = (identity, now)
        return now - self._head[1]


class AmqpProbe:
    """Probes RabbitMQ on one connection, kept open between scrapes and reopened after a loss."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: Connection | None = None
        self._clock = _HeadClock()

    def snapshot(self) -> QueueSnapshot:
        connection = self._connected()
        try:
            channel = connection.channel()
            try:
                ready, consumers = _declared(channel, JOB_QUEUE)
                age = self._head_age(channel) if ready else 0.0
                dead, _ = _declared(channel, DEAD_LETTER_QUEUE)
            finally:
                channel.close()
        except Exception as exc:
            self.close()
            raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc
        return QueueSnapshot(ready=ready, consumers=consumers, oldest_age_s=age, dead_letters=dead)

    def _head_age(self, channel: Any) -> float | None:
        message = channel.basic_get(queue=JOB_QUEUE, no_ack=False)
        if message is None:  # taken by a consumer meanwhile
            return 0.0
        try:
            headers = message.properties.get("application_headers") or {}
            identity = headers.get("id") or hash(message.body)
            stamp = job_time(message.body)
            if stamp is None and isinstance(message.properties.get("timestamp"), datetime):
                stamp = message.properties["timestamp"]
            return self._clock.age_s(identity, stamp)
        finally:
            channel.basic_reject(message.delivery_tag, requeue=True)

    def _connected(self) -> Connection:
        if self._connection is None:
            connection = connect(self._settings)
            try:
                connection.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_S)
            except Exception as exc:
                connection.release()
                raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc
            self._connection = connection
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            # A connection already lost has nothing left to close.
            with contextlib.suppress(Exception):
                self._connection.release()
            self._connection = None


def _declared(channel: Any, queue: str) -> tuple[int, int]:
    """Ready messages and consumers of ``queue`` (0 and 0 if no worker has declared it yet)."""
    try:
        _, ready, consumers = channel.queue_declare(queue=queue, passive=True)
    except amqp.exceptions.NotFound:
        return 0, 0
    return int(ready), int(consumers)


class RedisBrokerProbe:
    """Probes a Redis broker: list lengths and the next message, read in place."""

    def __init__(self, broker_url: str) -> None:
        self._redis = redis.Redis.from_url(
            broker_url, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
        )
        self._clock = _HeadClock()

    def snapshot(self) -> QueueSnapshot:
        lists = [_priority_list(JOB_QUEUE, step) for step in REDIS_PRIORITY_STEPS]
        try:
            pipe = self._redis.pipeline(transaction=False)
            for name in lists:
                pipe.llen(name)
                pipe.lindex(name, -1)  # kombu pushes on the left and takes from the right
            pipe.llen(DEAD_LETTER_QUEUE)
            answers = pipe.execute()
        except redis.RedisError as exc:
            raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc
        lengths, heads = answers[0:-1:2], answers[1:-1:2]
        ready = sum(int(length) for length in lengths)
        # The lowest priority step is served first: the first non-empty list holds the next job.
        head = next((raw for raw in heads if raw is not None), None)
        age = 0.0 if head is None else self._age(head)
        return QueueSnapshot(
            ready=ready, consumers=None, oldest_age_s=age, dead_letters=answers[-1]
        )

    def _age(self, raw: bytes) -> float | None:
        try:
            envelope = bounded_json.loads(raw)
            body = envelope["body"]
            encoded = envelope.get("properties", {}).get("body_encoding") == "base64"
            payload = base64.b64decode(body) if encoded else str(body).encode()
        except (ValueError, TypeError, KeyError):
            return None
        return self._clock.age_s(hash(raw), job_time(payload))

    def close(self) -> None:
        self._redis.close()


def _priority_list(queue: str, step: int) -> str:
    return f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}" if step else queue
