"""Task events in batches when Celery has no event loop to batch them (``kling-worker``).

Flower learns of each job from three task events (received, started, succeeded or failed). On
its own event loop (plain threads, ``celery -A worker worker``) Celery buffers them and sends a
``task.multi`` message now and then; under gevent it has no such loop and publishes every event
alone, which cost a tenth of the worker's CPU per job (docs/performance.md). This consumer step
turns the same buffer on and flushes it from a thread (a greenlet under gevent): every
:data:`FLUSH_INTERVAL_S`, when :data:`BATCH_LIMIT` events are waiting, and on stop. Flower reads
``task.multi`` as it reads single events.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)

#: Longest an event waits in the buffer: Flower shows a job at most this much later.
FLUSH_INTERVAL_S = 0.25
#: Events sent in one message at most.
BATCH_LIMIT = 100


class TaskEventBatching(bootsteps.StartStopStep):  # type: ignore[misc]
    """Buffers task events and flushes them in batches; does nothing where Celery batches."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._consumer = c
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self, c: Any) -> None:
        dispatcher = c.event_dispatcher
        if c.hub is not None or dispatcher is None or not dispatcher.enabled:
            return
        # Set again on every start: a reconnect makes a new dispatcher.
        dispatcher.buffer_group = frozenset({"task"})
        dispatcher.buffer_limit = BATCH_LIMIT
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_every_interval, name="task-events", daemon=True
            )
            self._flusher.start()

    def stop(self, c: Any) -> None:
        self.flush()

    def shutdown(self, c: Any) -> None:
        self._stopping.set()
        self.flush()

    def flush(self) -> None:
        dispatcher = self._consumer.event_dispatcher
        if dispatcher is None:
            return
        try:
            dispatcher.flush(errors=False)
        except Exception as exc:  # the broker is away: the buffer keeps them for the next try
            logger.debug("Task events not sent yet: %r", exc)

    def _flush_every_interval(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL_S):
            self.flush()
