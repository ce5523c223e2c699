"""The worker's pool: Celery's threads pool, except that a job delayed by a crash starts first.

A job copy that waited for a dead worker's lease (a retry of ours, see worker/tasks.py) or was
handed out again by the broker is *overdue*. While copies wait for their countdown, Celery
raises the prefetch count by one for each, so the worker takes as many more jobs, and with a
throttled fleet those queue in the pool for a thread. Celery's threads pool starts tasks in the
order it receives them, so a copy whose countdown ends would wait behind all of them, and a
dead worker's jobs would be answered minutes after the death instead of within the contract's
60 s. Here overdue tasks start before the others; each kind in the order received.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from celery.concurrency import thread
from celery.concurrency.base import apply_target


def is_overdue(request: dict[str, Any]) -> bool:
    """Whether a task request (Celery's request dict) is a job delayed by a crash."""
    delivery = request.get("delivery_info") or {}
    return bool(request.get("retries")) or bool(delivery.get("redelivered"))


class OverdueFirstExecutor:
    """A thread pool executor (the part of :class:`concurrent.futures.ThreadPoolExecutor` that
    Celery uses) whose queue is ordered: ``first`` submissions, then the rest, each in order."""

    def __init__(self, max_workers: int) -> None:
        self._max_workers = max_workers
        self._cond = threading.Condition()
        self._queue: list[tuple[int, int, Future[Any], Callable[..., Any], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], *args: Any, first: bool = False) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            heapq.heappush(self._queue, (0 if first else 1, next(self._order), future, fn, args))
            if len(self._queue) > self._idle and len(self._threads) < self._max_workers:
                worker = threading.Thread(
                    target=self._work, name=f"pool-{len(self._threads)}", daemon=True
                )
                self._threads.add(worker)
                worker.start()
            self._cond.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._shutdown:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._queue:
                    return
                _, _, future, fn, args = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Start nothing new; with ``cancel_futures``, drop what has not started; with
        ``wait``, return once the running tasks have finished."""
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                for _, _, future, _, _ in self._queue:
                    future.cancel()
                self._queue.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        if wait:
            for worker in threads:
                worker.join()


class TaskPool(thread.TaskPool):  # type: ignore[misc]
    """Celery's threads pool with an :class:`OverdueFirstExecutor`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Celery's executor has started no thread yet (threads start on submit): replace it.
        self.executor = OverdueFirstExecutor(self.limit)

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> thread.ApplyResult:
        # Celery calls the pool with (task name, id, request dict, body, ...) for a task.
        request = args[2] if args and len(args) > 2 and isinstance(args[2], dict) else {}
        future = self.executor.submit(
            apply_target, target, args, kwargs, callback, accept_callback,
            first=is_overdue(request),
        )  # fmt: skip
        return thread.ApplyResult(future)
