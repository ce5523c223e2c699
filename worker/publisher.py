"""Publishing terminal results to the ``kling.results`` topic exchange through a producer pool."""

from __future__ import annotations

import logging
import weakref
from typing import Any

from kombu.connection import Connection
from kombu.pools import ProducerPool

from contract.messages import raw_body
from contract.names import DEAD_LETTER_QUEUE, DEAD_LETTER_REASON_HEADER, result_routing_key
from contract.results import Result
from contract.topology import (
    DEAD_LETTER_EXCHANGE,
    RESULTS_EXCHANGE,
    dead_letter_queue,
    result_queue,
)

logger = logging.getLogger(__name__)

#: How hard one publish tries before the task gives the message back to the broker.
PUBLISH_RETRY_POLICY: dict[str, Any] = {
    "max_retries": 5,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 2.0,
}


#: Most broker connections the publisher opens. A confirmed publish holds one for about a
#: round trip, so a few serve hundreds of threads; one per thread cost memory in the worker and
#: CPU in the broker (docs/history/2026-11-25-performance.md).
MAX_PUBLISH_CONNECTIONS = 8


def serializable(result: Result) -> str:
    """``result`` as its JSON body or, when that cannot be made (an echo of a caller's broken
    message nested too deeply, say), the same result without its echoes, the reason said.

    Only the echoes (``metadata``, ``source``) come from outside the worker, so dropping them
    always leaves a body that can be made: publishing never fails twice for the same reason.
    """
    try:
        body = result.to_json()
        body.encode()  # a lone surrogate in an echo serializes, then fails on the wire
        return body
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError included
        reason = f"metadata and source not echoed: they cannot be serialized ({type(exc).__name__})"
        logger.warning("Job %s: %s.", result.job_id, reason)
        error = result.error
        if error is not None:
            error = error.model_copy(update={"message": f"{error.message} ({reason})"})
        return result.model_copy(update={"metadata": {}, "source": None, "error": error}).to_json()


class ResultPublisher:
    """Thread-safe: each publish borrows a producer (and its connection) from the pool."""

    def __init__(self, connection: Connection, *, pool_size: int) -> None:
        self._connection = connection
        pool_size = min(pool_size, MAX_PUBLISH_CONNECTIONS)
        self._connections = connection.Pool(limit=pool_size)
        self._producers = ProducerPool(self._connections, limit=pool_size)
        self._result_queue = result_queue()
        #: Broker connections (one object per connect) that have declared the result queue.
        self._declared_on: weakref.WeakSet[Any] = weakref.WeakSet()

    def publish(self, result: Result) -> None:
        """Publish ``result`` persistently; raises if the broker does not take it.

        The body is made before a producer is borrowed: a result that cannot be serialized is
        replaced by a smaller one (:func:`serializable`), and never fails on a pooled producer
        that other jobs share.
        """
        body = serializable(result)
        with self._producers.acquire(block=True) as producer:
            producer.publish(
                body,
                exchange=RESULTS_EXCHANGE,
                routing_key=result_routing_key(result.status),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                correlation_id=result.job_id,
                declare=self._declare_once(producer),
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )

    def _declare_once(self, producer: Any) -> list[Any]:
        """The result queue, for the first publish on each broker connection, so that no result
        is dropped for want of a bound queue; nothing after (kombu would look it up in its cache
        on every publish, which cost 6 % of a job's CPU)."""
        connection = producer.connection.connection
        if connection is None:
            # Not connected (a publish before failed): kombu connects again, and declares.
            return [self._result_queue]
        if connection in self._declared_on:
            return []
        self._declared_on.add(connection)
        return [self._result_queue]

    def publish_dead_letter(self, message: Any, reason: str) -> None:
        """Copy ``message`` (body bytes, content type, headers) to the dead-letter queue."""
        headers = dict(message.headers) if isinstance(message.headers, dict) else {}
        headers[DEAD_LETTER_REASON_HEADER] = reason
        with self._producers.acquire(block=True) as producer:
            producer.publish(
                # The client decoded a body with a text encoding: the same codec restores it.
                raw_body(message.body, message.content_encoding),
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=DEAD_LETTER_QUEUE,
                content_type=message.content_type or "application/octet-stream",
                content_encoding=message.content_encoding or "binary",
                headers=headers,
                delivery_mode=2,
                declare=[dead_letter_queue()],
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )

    def close(self) -> None:
        self._producers.force_close_all()
        self._connections.force_close_all()
        self._connection.release()
