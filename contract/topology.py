"""Broker connections, and the queues, exchanges and bindings of the contract.

The same transport options serve Celery, the result publisher and the producers, so a setting
such as publisher confirms cannot differ between them.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from contract.embedded_broker import TRANSPORT as EMBEDDED_TRANSPORT
from contract.names import (
    DEAD_LETTER_QUEUE,
    JOB_QUEUE,
    RESULT_BINDING_KEY,
    RESULT_EXCHANGE,
    RESULT_QUEUE,
)
from contract.settings import Settings

logger = logging.getLogger(__name__)

#: How often the embedded broker looks for new message files.
EMBEDDED_POLL_INTERVAL_S = 0.05
#: Redis as broker: a job delivered this long ago and not yet acked is handed out again. That is
#: how a dead worker's jobs come back (Redis cannot see a consumer die), so it is short, to run
#: them again within the contract's 60 s. A live worker's job that takes longer is handed out a
#: second time too, but its copy finds the job's renewed lease, waits, and ends with no call
#: and no result of its own (worker/coordination/outcomes.py): the lease, not this timeout,
#: keeps a job from running twice.
REDIS_VISIBILITY_TIMEOUT_S = 30
#: How often a Redis-broker worker sweeps for jobs past the visibility timeout (kombu's default
#: sweep runs every 10 × 10 s, too late for the 60 s).
REDIS_RESTORE_INTERVAL_S = 5
#: A job copy that found its lease held by another worker waits here for its countdown, apart
#: from the job queue: behind a backlog there it would wait for the whole backlog.
LEASE_WAIT_QUEUE = f"{JOB_QUEUE}.waiting"

JOB_EXCHANGE = Exchange(JOB_QUEUE, type="direct", durable=True)
RESULTS_EXCHANGE = Exchange(RESULT_EXCHANGE, type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange(DEAD_LETTER_QUEUE, type="direct", durable=True)
LEASE_WAIT_EXCHANGE = Exchange(LEASE_WAIT_QUEUE, type="direct", durable=True)


def job_queue() -> Queue:
    return Queue(JOB_QUEUE, JOB_EXCHANGE, routing_key=JOB_QUEUE, durable=True)


def result_queue(name: str = RESULT_QUEUE, binding_key: str = RESULT_BINDING_KEY) -> Queue:
    return Queue(name, RESULTS_EXCHANGE, routing_key=binding_key, durable=True)


def dead_letter_queue() -> Queue:
    return Queue(
        DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, routing_key=DEAD_LETTER_QUEUE, durable=True
    )


def lease_wait_queue() -> Queue:
    """Where workers send a job back to wait while another worker holds its lease; every worker
    that takes jobs consumes it too."""
    return Queue(LEASE_WAIT_QUEUE, LEASE_WAIT_EXCHANGE, routing_key=LEASE_WAIT_QUEUE, durable=True)


def transport_options(settings: Settings) -> dict[str, Any]:
    """Transport options for ``settings.broker_url``."""
    if settings.uses_embedded_broker:
        folder = settings.embedded_broker_dir.resolve()
        queues, control = folder / "queues", folder / "control"
        queues.mkdir(parents=True, exist_ok=True)
        control.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queues),
            "data_folder_out": str(queues),
            "control_folder": str(control),
            "polling_interval": EMBEDDED_POLL_INTERVAL_S,
        }
    if settings.broker_is_redis:
        return {
            "visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval": REDIS_RESTORE_INTERVAL_S,
            # Every sweep scans (kombu scans one in 10 by default).
            "unacked_restore_throttle": 1,
            # One connection per worker thread, or acks fail under load
            # (docs/calibration.md, trap 2).
            "max_connections": settings.worker_concurrency + 16,
        }
    if settings.broker_is_amqp:
        # The broker confirms every publish, so a message is never dropped silently.
        return {"confirm_publish": True}
    return {}


def connect(settings: Settings) -> Connection:
    """A (lazy) kombu connection to the configured broker."""
    if settings.uses_embedded_broker:
        warn_embedded_broker(settings)
    return Connection(
        settings.broker_url,
        transport=broker_transport(settings),
        transport_options=transport_options(settings),
    )


def broker_transport(settings: Settings) -> str | None:
    """The transport class for ``settings.broker_url`` where the URL's scheme is not enough."""
    return EMBEDDED_TRANSPORT if settings.uses_embedded_broker else None


_warned = False


def warn_embedded_broker(settings: Settings) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "CELERY_BROKER_URL is not set: using the embedded broker in %s. It works on this "
            "machine only; set CELERY_BROKER_URL to amqp://… or redis://… to run a fleet.",
            settings.embedded_broker_dir.resolve(),
        )


def declare_topology(connection: Connection) -> None:
    """Declare the job queue, the result exchange with its default queue, the dead letters and
    the queue of jobs waiting for a lease."""
    channel = connection.default_channel
    for queue in (job_queue(), result_queue(), dead_letter_queue(), lease_wait_queue()):
        queue(channel).declare()


def purge_queues(settings: Settings) -> int:
    """Declare the job, result, dead-letter and lease-wait queues and drop every message on them.

    For a fresh start of a test or a benchmark; returns how many messages were dropped.
    """
    dropped = 0
    with connect(settings) as connection:
        channel = connection.default_channel
        for queue in (job_queue(), result_queue(), dead_letter_queue(), lease_wait_queue()):
            bound = queue(channel)
            bound.declare()
            dropped += bound.purge() or 0
    return dropped
