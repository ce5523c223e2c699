"""The worker's threads pool starts a job delayed by a crash before the jobs queued ahead of it."""

from __future__ import annotations

import threading

import pytest

from worker.pool import OverdueFirstExecutor, is_overdue


def test_overdue_tasks_start_first_then_the_rest_in_order() -> None:
    executor = OverdueFirstExecutor(max_workers=1)
    busy, order = threading.Event(), list[str]()
    blocker = executor.submit(busy.wait, 5)
    queued = [executor.submit(order.append, name, first=first)
              for name, first in [("a", False), ("b", False), ("recovered", True)]]  # fmt: skip

    busy.set()
    for future in [blocker, *queued]:
        future.result(timeout=5)

    assert order == ["recovered", "a", "b"]
    executor.shutdown()


def test_results_and_errors_come_back_through_the_future() -> None:
    executor = OverdueFirstExecutor(max_workers=2)

    assert executor.submit(sum, [1, 2, 3]).result(timeout=5) == 6
    with pytest.raises(ZeroDivisionError):
        executor.submit(divmod, 1, 0).result(timeout=5)
    executor.shutdown()


def test_threads_are_started_only_as_work_needs_them() -> None:
    executor = OverdueFirstExecutor(max_workers=8)
    for _ in range(5):
        executor.submit(len, "x").result(timeout=5)

    assert len(executor._threads) == 1
    executor.shutdown()


def test_shutdown_cancels_what_has_not_started_and_waits_for_what_runs() -> None:
    executor = OverdueFirstExecutor(max_workers=1)
    release = threading.Event()
    running = executor.submit(release.wait, 5)
    waiting = executor.submit(len, "never")
    threading.Timer(0.2, release.set).start()

    executor.shutdown(cancel_futures=True)

    assert running.done()
    assert running.result() is True
    assert waiting.cancelled()
    with pytest.raises(RuntimeError):
        executor.submit(len, "late")


def test_a_retried_or_redelivered_task_is_overdue() -> None:
    assert is_overdue({"retries": 1, "delivery_info": {}})
    assert is_overdue({"retries": 0, "delivery_info": {"redelivered": True}})
    assert not is_overdue({"retries": 0, "delivery_info": {"redelivered": False}})
    assert not is_overdue({})
