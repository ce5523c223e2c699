"""Redis writes no job waits for, sent together by one thread of the worker process.

Giving a call's slot back and a job's lease back matter to the rest of the fleet, not to the job
that held them, and both lapse by themselves within a lease time if never sent (their renewal
stops first). So instead of a round trip each on every job's path, they queue here and one
thread sends whatever has queued meanwhile in one pipeline: under load, one round trip carries
the writes of many jobs. ``flush`` waits for what is queued (shutdown, tests).

A thread here is a greenlet under ``kling-worker``: it waits on :mod:`threading` primitives
only, which gevent makes cooperative.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

logger = logging.getLogger(__name__)

#: Most writes in one pipeline: bounds a round trip's size when a backlog builds up.
MAX_BATCH = 500

#: Called with the script's reply, or the exception that kept it from Redis.
Done = Callable[[Any], None]


@dataclass(frozen=True)
class Write:
    script: Script
    keys: Sequence[str]
    args: Sequence[str | int | float]
    done: Done | None = None


class WriteBehind:
    """Queues script calls and sends them in batches from a thread of its own (started on the
    first write)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._queue: deque[Write] = deque()
        self._changed = threading.Condition()
        self._sending = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Pipelines sent so far (each one round trip, and one to check the scripts are loaded).
        self.batches_sent = 0

    def send(self, write: Write) -> None:
        """Queue ``write``; once closed, it is sent at once, on the caller's thread."""
        with self._changed:
            if not self._closed:
                self._queue.append(write)
                self._start_if_needed()
                self._changed.notify_all()
                return
        self._send([write])

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every write queued so far has been sent; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and not self._sending, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued and stop the thread; later writes go at once."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _start_if_needed(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="redis-write-behind", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed, and nothing left
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                self._sending = len(batch)
            try:
                self._send(batch)
            finally:
                with self._changed:
                    self._sending = 0
                    self._changed.notify_all()

    def _send(self, batch: list[Write]) -> None:
        replies: list[Any]
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for write in batch:
                    write.script(keys=write.keys, args=write.args, client=pipe)
                replies = pipe.execute(raise_on_error=False)
            self.batches_sent += 1
        except redis.RedisError as exc:
            # Each of these lapses by itself within its lease time.
            logger.warning("%d Redis writes not sent (%r); their leases lapse.", len(batch), exc)
            replies = [exc] * len(batch)
        for write, reply in zip(batch, replies, strict=True):
            if write.done is None:
                continue
            try:
                write.done(reply)
            except Exception:
                logger.exception("A write-behind callback failed.")
