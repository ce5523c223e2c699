"""The in-process limiter (no ``REDIS_URL``): the same contract within one worker process."""

from __future__ import annotations

import threading
import time

import pytest

from contract.settings import Settings
from worker.accounts import load_accounts
from worker.coordination.limits import DEFAULT_SLOT_LEASE_S, LocalLimiter
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


def test_busy_answers_lower_the_target_once_per_round_and_successes_recover_it() -> None:
    limiter = LocalLimiter(max_concurrency=10)
    slots = [limiter.slot() for _ in range(10)]
    for slot in slots:
        slot.__enter__()
    # Ten calls in flight; the upstream says busy to this thread's call: 10 × 0.7.
    limiter.report_busy()
    assert limiter.target() == pytest.approx(7.0)
    # A second report about the same call (started before the decrease) changes nothing.
    limiter.report_busy()
    assert limiter.target() == pytest.approx(7.0)
    for slot in slots:
        slot.__exit__(UpstreamBusy, UpstreamBusy("busy"), None)
    assert limiter.target() == pytest.approx(7.0)
    # Successes add about one slot per round of calls, back up to the cap.
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
