"""The Redis commands of many jobs, sent together by one thread of the worker process.

Each job of a worker process makes a few small Redis calls: claim its ``job_id``, record its
outcome, give its call slot and its lease back. Made one by one, each costs a connection
checkout and a round trip of its own, which under load was a sixth of the worker's CPU. Here
they queue, and one thread sends whatever has queued meanwhile in one pipeline: under load, one
round trip carries the commands of many jobs.

- :meth:`PipelinedCommands.call` waits for the command's reply (a claim, a record: the job
  goes on only once Redis has it);
- :meth:`PipelinedCommands.send` does not: giving a slot or a lease back matters to the rest of
  the fleet, not to the job, and both lapse by themselves within a lease time if never sent
  (their renewal stops first).

Commands reach Redis in the order they were queued, so a claim made after a lease was given
back sees it given back. A thread here is a greenlet under ``kling-worker``: it waits on
:mod:`threading` primitives only, which gevent makes cooperative.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

logger = logging.getLogger(__name__)

#: Most commands in one pipeline: bounds a round trip's size when a backlog builds up.
MAX_BATCH = 500
#: Longest :meth:`PipelinedCommands.call` waits for its reply (queue, then the round trip).
CALL_TIMEOUT_S = 30.0

#: Adds one command to the pipeline.
Command = Callable[[Pipeline], object]
#: Called with the command's reply, or the exception that kept it from Redis.
Done = Callable[[Any], None]


def script_call(script: Script, keys: Sequence[str], args: Sequence[str | int | float]) -> Command:
    """The command that runs ``script`` (loaded on first use, and again after a Redis restart)."""
    return lambda pipe: script(keys=keys, args=args, client=pipe)


@dataclass(frozen=True)
class _Queued:
    command: Command
    done: Done | None


class _Reply:
    def __init__(self) -> None:
        self._arrived = threading.Event()
        self._value: Any = None

    def set(self, value: Any) -> None:
        self._value = value
        self._arrived.set()

    def get(self, timeout_s: float) -> Any:
        if not self._arrived.wait(timeout_s):
            raise redis.TimeoutError(f"no reply from Redis within {timeout_s:g} s")
        if isinstance(self._value, Exception):
            raise self._value
        return self._value


class PipelinedCommands:
    """Queues commands and sends them in batches from a thread of its own (started on the first
    command). Thread-safe; one per worker process and Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._queue: deque[_Queued] = deque()
        self._changed = threading.Condition()
        self._sending = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Pipelines sent so far (each one round trip, and one to check the scripts are loaded).
        self.batches_sent = 0

    def call(self, command: Command) -> Any:
        """Send ``command`` with the next batch and return its reply; raises what kept it from
        Redis (a :class:`redis.RedisError`), or the error Redis answered."""
        reply = _Reply()
        self.send(command, done=reply.set)
        return reply.get(CALL_TIMEOUT_S)

    def send(self, command: Command, *, done: Done | None = None) -> None:
        """Queue ``command``; ``done`` gets its reply. Once closed, it is sent at once, on the
        caller's thread."""
        queued = _Queued(command, done)
        with self._changed:
            if not self._closed:
                self._queue.append(queued)
                self._start_if_needed()
                self._changed.notify_all()
                return
        self._send([queued])

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every command queued so far has been sent; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and not self._sending, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued and stop the thread; later commands go at once."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _start_if_needed(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="redis-pipelining", daemon=True)
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

    def _send(self, batch: list[_Queued]) -> None:
        replies: list[Any]
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for queued in batch:
                    queued.command(pipe)
                replies = pipe.execute(raise_on_error=False)
            self.batches_sent += 1
        except redis.RedisError as exc:
            replies = [exc] * len(batch)
        unsent = 0
        for queued, reply in zip(batch, replies, strict=True):
            if queued.done is None:
                unsent += isinstance(reply, Exception)
                continue
            try:
                queued.done(reply)
            except Exception:
                logger.exception("A Redis reply's callback failed.")
        if unsent:
            # Slots and leases given back: each lapses by itself within its lease time.
            logger.warning("%d Redis commands were not carried out (%r).", unsent, replies[0])
