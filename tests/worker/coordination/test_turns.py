"""The turn to ask for a call slot passes in order of arrival, a job delayed by a crash first."""

from __future__ import annotations

import threading
import time

from worker.coordination.turns import Turnstile, overdue_job


def test_the_turn_passes_in_order_of_arrival_and_an_overdue_job_goes_first() -> None:
    turnstile = Turnstile()
    order: list[str] = []

    def wait_turn(name: str, overdue: bool) -> None:
        with overdue_job(overdue), turnstile.turn():
            order.append(name)

    threads = []
    with turnstile.turn():
        for name, overdue in [("first", False), ("second", False), ("recovered", True)]:
            thread = threading.Thread(target=wait_turn, args=(name, overdue))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 5
            while len(turnstile._waiting) < len(threads):  # queued, in this order
                assert time.monotonic() < deadline
                time.sleep(0.005)
    for thread in threads:
        thread.join(timeout=5)

    assert order == ["recovered", "first", "second"]


def test_a_free_turn_is_taken_at_once_and_given_back() -> None:
    turnstile = Turnstile()
    for _ in range(3):
        with turnstile.turn():
            pass
    assert not turnstile._busy
