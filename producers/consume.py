"""Consuming results: :func:`iter_results` yields parsed results from a durable result queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from queue import Empty

from pydantic import ValidationError

from contract.names import RESULT_QUEUE
from contract.results import Result
from contract.settings import Settings
from contract.topology import connect, result_queue

logger = logging.getLogger(__name__)

#: Without ``follow``, stop once the queue has been empty this long.
DEFAULT_IDLE_TIMEOUT_S = 2.0


def iter_results(
    settings: Settings | None = None,
    *,
    queue: str = RESULT_QUEUE,
    max_results: int | None = None,
    follow: bool = False,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
) -> Iterator[Result]:
    """Yield results from ``queue`` (declared and bound to ``kling.results`` if new).

    Each message is acknowledged once the caller asks for the next one or stops iterating; a
    result whose consumer dies before then is delivered again. Stops after ``max_results``,
    or, unless ``follow``, once no result has come for ``idle_timeout_s``.
    """
    settings = settings or Settings()
    delivered = 0
    with connect(settings) as connection:
        consumer_queue = connection.SimpleQueue(result_queue(queue))
        try:
            while max_results is None or delivered < max_results:
                try:
                    message = consumer_queue.get(
                        block=True, timeout=None if follow else idle_timeout_s
                    )
                except Empty:
                    return
                try:
                    result = Result.model_validate_json(message.body)
                except ValidationError as exc:
                    logger.error("Dropping a message on %s that is not a result: %s", queue, exc)
                    message.reject(requeue=False)
                    continue
                try:
                    yield result
                except GeneratorExit:
                    # The caller had the result and stopped: it is theirs, not to be sent again.
                    message.ack()
                    raise
                message.ack()
                delivered += 1
        finally:
            consumer_queue.close()
