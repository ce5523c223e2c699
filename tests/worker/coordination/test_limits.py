"""The in-process limiter (no ``REDIS_URL``): the same contract within one worker process."""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager

import pytest

from contract.settings import Settings
from worker.accounts import load_accounts
from worker.coordination.limits import BUSY_HOLD_S, DEFAULT_SLOT_LEASE_S, LocalLimiter
from worker.coordination.limits_redis import RedisLimiter
from worker.coordination.store import Coordination
from worker.errors import UpstreamBusy, VideoRejected, WorkerStopping
from worker.runtime import account_pool


def run_calls(limiter: LocalLimiter, threads: int, calls_each: int, hold_s: float) -> int:
    """Run the calls on ``threads`` threads; returns the most ever inside a slot at once."""
    inside = peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, peak
        for _ in range(calls_each):
            with limiter.slot():
                with lock:
                    inside += 1
                    peak = max(peak, inside)
                time.sleep(hold_s)
                with lock:
                    inside -= 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return peak


def test_no_more_than_the_cap_run_at_once_and_the_cap_is_reached() -> None:
    limiter = LocalLimiter(max_concurrency=4)
    assert run_calls(limiter, threads=12, calls_each=5, hold_s=0.01) == 4
    assert limiter.held() == 0
    assert limiter.stats.acquired == 60


def test_the_rate_spaces_calls_out() -> None:
    limiter = LocalLimiter(max_concurrency=50, max_rate=100.0)
    started = time.monotonic()
    run_calls(limiter, threads=10, calls_each=5, hold_s=0.0)
    # 50 calls at 100/s: the first goes at once, the last 0.49 s later.
    assert time.monotonic() - started >= 0.45


def test_a_slot_is_given_back_when_the_call_raises() -> None:
    limiter = LocalLimiter(max_concurrency=1)
    with pytest.raises(VideoRejected), limiter.slot():
        raise VideoRejected("clip rejected")
    with limiter.slot():
        assert limiter.held() == 1
    assert limiter.held() == 0


BUSY = UpstreamBusy("1303: parallel tasks over the limit", http_status=429)


class Clock:
    """A clock the test moves: the back-off weighs answers by their call time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def take(limiter: LocalLimiter, calls: int) -> list[AbstractContextManager[None]]:
    """``calls`` slots taken at once: calls in flight together."""
    slots = [limiter.slot() for _ in range(calls)]
    for slot in slots:
        slot.__enter__()
    return slots


def answer(slots: list[AbstractContextManager[None]], busy: int) -> None:
    """End the calls: the first ``busy`` of them answered 1303, the rest succeeded."""
    for index, slot in enumerate(slots):
        if index < busy:
            slot.__exit__(UpstreamBusy, BUSY, None)
        else:
            slot.__exit__(None, None, None)


def test_a_round_with_many_busy_answers_keeps_the_share_that_got_through() -> None:
    limiter = LocalLimiter(max_concurrency=40)
    # Twenty calls in flight, half of them refused: the account has room for about ten.
    answer(take(limiter, 20), busy=10)
    assert limiter.target() == pytest.approx(10.0)
    assert limiter.stats.busy_answers == 10


def test_far_over_the_limit_a_cut_is_at_most_half() -> None:
    limiter = LocalLimiter(max_concurrency=40)
    answer(take(limiter, 20), busy=19)
    assert limiter.target() == pytest.approx(10.0)


def test_busy_answers_within_the_tolerance_do_not_slow_the_fleet() -> None:
    limiter = LocalLimiter(max_concurrency=40)
    # A shared account refuses a call now and then, whatever the load: 2 in 40 (5 %).
    for _ in range(2):
        answer(take(limiter, 20), busy=1)
    assert limiter.target() == 40


def test_one_busy_answer_alone_says_too_little() -> None:
    limiter = LocalLimiter(max_concurrency=10)
    answer(take(limiter, 10), busy=1)
    assert limiter.target() == 10


def test_a_refused_calls_slot_comes_free_a_second_after_the_answer() -> None:
    limiter = LocalLimiter(max_concurrency=1)
    answer(take(limiter, 1), busy=1)
    answered = time.monotonic()
    # The next job would be refused too: it waits for the refused call's slot.
    assert limiter.held() == 1
    with limiter.slot():
        waited_s = time.monotonic() - answered
    assert BUSY_HOLD_S - 0.1 <= waited_s <= BUSY_HOLD_S + 0.5
    assert limiter.held() == 0


def test_calls_started_before_a_back_off_say_nothing_new() -> None:
    clock = Clock()
    limiter = LocalLimiter(max_concurrency=40, clock=clock)
    earlier = take(limiter, 5)
    clock.now = 0.5
    # A window of 25 answers, 12 busy: the fleet keeps 52 % of the 25 in flight.
    answer(take(limiter, 20), busy=10)
    answer(take(limiter, 5), busy=2)
    assert limiter.target() == pytest.approx(13.0)
    clock.now += BUSY_HOLD_S
    # The calls in flight since before the back-off end busy too, then a round goes well: the
    # earlier calls are not part of the new window (5 busy in 20 answers would cut again).
    answer(earlier, busy=5)
    clock.now += BUSY_HOLD_S
    for _ in range(2):
        answer(take(limiter, 10), busy=0)
    assert limiter.target() > 13.0


def test_successes_grow_a_lowered_target_back_to_the_cap() -> None:
    limiter = LocalLimiter(max_concurrency=10)
    answer(take(limiter, 10), busy=0)
    answer(take(limiter, 10), busy=10)  # the window closes on its 20th answer: 50 % busy
    assert limiter.target() == pytest.approx(5.0)
    # Successes add about one slot per round of calls, back up to the cap (once the refused
    # calls' slots are free).
    time.sleep(BUSY_HOLD_S)
    for _ in range(40):
        with limiter.slot():
            pass
    assert limiter.target() == 10


def default_limiter(settings: Settings, coordination: Coordination) -> object:
    """The limiter the runtime gives the one account of a fleet without an accounts file."""
    return account_pool(load_accounts(settings), coordination, settings).lane("default").limiter


def test_without_redis_the_limiter_is_in_process() -> None:
    settings = Settings(_env_file=None, kling_max_concurrency=3, kling_max_rate=5.0)
    limiter = default_limiter(settings, Coordination.from_settings(settings))
    assert isinstance(limiter, LocalLimiter)
    assert (limiter.max_concurrency, limiter.max_rate) == (3, 5.0)


def test_with_redis_the_limiter_is_fleet_wide_with_short_renewed_slot_leases(
    redis_url: str,
) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url, kling_timeout_seconds=30)
    coordination = Coordination.from_settings(settings)
    limiter = default_limiter(settings, coordination)
    assert isinstance(limiter, RedisLimiter)
    # Shorter than a call: renewed while it lasts, so a killed worker's slots come back fast.
    assert limiter.lease_s == DEFAULT_SLOT_LEASE_S < settings.kling_timeout_seconds
    assert coordination.renewer is not None
    assert coordination.renewer.tick_s < limiter.lease_s / 2
    coordination.close()


def test_the_slot_lease_setting_still_sets_the_lease(redis_url: str) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url, kling_slot_lease_seconds=4)
    coordination = Coordination.from_settings(settings)
    limiter = default_limiter(settings, coordination)
    assert isinstance(limiter, RedisLimiter)
    assert limiter.lease_s == 4
    assert coordination.renewer is not None
    assert coordination.renewer.tick_s == 1
    coordination.close()


def test_a_call_waiting_for_a_slot_is_not_made_once_the_worker_stops() -> None:
    stopping = threading.Event()
    limiter = LocalLimiter(max_concurrency=1, stopping=stopping)
    outcome: list[BaseException] = []

    def wait_for_slot() -> None:
        try:
            with limiter.slot():
                pass
        except WorkerStopping as exc:
            outcome.append(exc)

    with limiter.slot():
        waiter = threading.Thread(target=wait_for_slot)
        waiter.start()
        time.sleep(0.2)
        stopping.set()
        waiter.join(timeout=2)
    assert not waiter.is_alive()
    assert len(outcome) == 1
