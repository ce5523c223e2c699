"""The bytes a worker process's concurrent probes buffer are bounded: a probe takes its share
of the budget before each read, waits (within its own deadline) while others hold it, and the
waiting cannot lock up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from contract.clip_rules import COMETAPI_RULES
from tests.worker.preflight.hosts import misbehaving_host
from worker.errors import UpstreamDown
from worker.preflight import Preflight, ReadLimits
from worker.preflight.budget import PREFLIGHT_BUFFER_BYTES, ByteBudget, Share
from worker.preflight.deadline import Deadline

FIRST = 64 * 1024


def take_in_thread(share: Share, count: int, timeout_s: float) -> Callable[[], bool | None]:
    """Start ``share.take`` in a thread; the returned call waits (8 s at most) for its answer."""
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(share.take(count, Deadline(timeout_s))))
    thread.start()

    def result() -> bool | None:
        thread.join(8.0)
        return answer[0] if answer else None

    return result


def wait_until(condition: Callable[[], bool], within_s: float) -> None:
    ends = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < ends, "the condition did not come true in time"
        time.sleep(0.01)


def test_the_default_budget_is_64_mib_and_a_preflight_gets_one() -> None:
    preflight = Preflight(rules=COMETAPI_RULES, pool_size=1)

    assert PREFLIGHT_BUFFER_BYTES == 64 * 1024 * 1024
    assert preflight.budget.capacity == PREFLIGHT_BUFFER_BYTES
    assert preflight.budget.held == 0


def test_a_take_the_budget_cannot_cover_gives_up_at_the_deadline() -> None:
    budget = ByteBudget(400, reserve=100)
    assert budget.share().take(300, Deadline(1.0))
    started = time.monotonic()

    taken = budget.share().take(1, Deadline(0.3))

    assert taken is False
    assert time.monotonic() - started >= 0.25  # it waited for the bytes, then gave up
    assert budget.held == 300


def test_bytes_given_back_wake_a_probe_waiting_for_them() -> None:
    budget = ByteBudget(400, reserve=100)
    holder, waiter = budget.share(), budget.share()
    assert holder.take(300, Deadline(1.0))
    waited = take_in_thread(waiter, 200, timeout_s=30.0)
    time.sleep(0.1)

    holder.release()

    assert waited() is True
    assert budget.held == 200


def test_only_a_probe_that_already_holds_bytes_may_draw_on_the_reserve() -> None:
    budget = ByteBudget(400, reserve=200)
    growing, new = budget.share(), budget.share()
    assert growing.take(200, Deadline(1.0))  # the shared pool is spent

    assert new.take(10, Deadline(0.1)) is False
    assert growing.take(150, Deadline(0.1)) is True
    assert budget.held == 350


def test_probes_that_all_want_more_than_is_left_still_finish_one_after_the_other() -> None:
    budget = ByteBudget(400, reserve=200)
    first, second = budget.share(), budget.share()
    assert first.take(100, Deadline(1.0))
    assert second.take(100, Deadline(1.0))  # the pool is spent, both want 150 more

    assert first.take(150, Deadline(0.1)) is True  # the reserve
    second_waited = take_in_thread(second, 150, timeout_s=30.0)
    time.sleep(0.1)
    first.release()

    assert second_waited() is True
    assert budget.held == 250


def test_a_budget_must_hold_its_reserve_twice() -> None:
    with pytest.raises(ValueError, match="cannot keep back"):
        ByteBudget(300, reserve=200)


def test_probes_beyond_the_budget_wait_unsent_and_end_as_timeouts(corpus: dict[str, bytes]) -> None:
    # Room for three first reads besides the reserve; six probes of a host that stalls.
    limits = ReadLimits(first_bytes=FIRST, max_bytes=2 * FIRST, timeout_s=5.0, read_timeout_s=30.0)
    preflight = Preflight(
        rules=COMETAPI_RULES, pool_size=8, limits=limits, buffer_bytes=limits.max_bytes + 3 * FIRST
    )

    def probe(url: str) -> object:
        try:
            return preflight.check(url, where="the clip")
        except UpstreamDown as exc:
            return exc

    with misbehaving_host(corpus["faststart.mp4"]) as host, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(probe, host.url("stall-body")) for _ in range(6)]
        wait_until(lambda: host.requests >= 3, within_s=4.0)
        time.sleep(0.3)
        sent_while_stalled, held_while_stalled = host.requests, preflight.budget.held
        outcomes = [future.result(timeout=30) for future in futures]

    assert sent_while_stalled == 3
    assert held_while_stalled == 3 * FIRST
    assert all(isinstance(outcome, UpstreamDown) for outcome in outcomes), outcomes
    assert preflight.budget.held == 0
