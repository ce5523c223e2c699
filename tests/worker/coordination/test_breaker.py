"""The circuit breaker of each account: it pauses one account, then lets one probe call test it.

Every behaviour is checked on both implementations: in-process (:class:`LocalBreaker`) and
fleet-wide in a real Redis (:class:`RedisBreaker`, two instances standing for two processes).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from contract import keys
from devstack.processes import free_port
from worker.coordination.breaker import (
    CLOSED,
    BreakerState,
    LocalBreaker,
    RedisBreaker,
)
from worker.errors import AccountBlocked, AuthFailed

OPEN_S = 0.3
RECHECK_S = 0.05
PROBE_LEASE_S = 0.5

#: Makes the breaker of an account; called twice with one name, the two share its state.
Factory = Callable[[str], BreakerState]


@pytest.fixture(params=["local", "redis"])
def make_breaker(request: pytest.FixtureRequest) -> Iterator[Factory]:
    if request.param == "local":
        made: dict[str, LocalBreaker] = {}

        def local(account: str) -> BreakerState:
            # In one process an account has one breaker: "two processes" share it.
            if account not in made:
                made[account] = LocalBreaker(
                    open_s=OPEN_S, account=account, probe_lease_s=PROBE_LEASE_S
                )
            return made[account]

        yield local
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    run = uuid.uuid4().hex

    def shared(account: str) -> BreakerState:
        return RedisBreaker(
            client,
            open_s=OPEN_S,
            key=keys.account_breaker(f"{account}-{run}"),
            account=account,
            recheck_s=RECHECK_S,
            probe_lease_s=PROBE_LEASE_S,
        )

    yield shared
    for key in client.scan_iter(match=f"kling:account:*-{run}:*"):
        client.delete(key)
    client.close()


def blocked() -> AccountBlocked:
    return AccountBlocked("Kling code 1102: Resource pack depleted", api_code=1102)


def wait_past(seconds: float) -> None:
    time.sleep(seconds + RECHECK_S + 0.05)


def test_a_new_breaker_is_closed(make_breaker: Factory) -> None:
    breaker = make_breaker("main")
    assert breaker.view() == CLOSED
    assert breaker.view().error is None


def test_a_trip_pauses_the_account_with_the_same_error_type_named_for_it(
    make_breaker: Factory,
) -> None:
    breaker, elsewhere = make_breaker("main"), make_breaker("main")
    breaker.trip(blocked())

    for seen in (breaker.view(), elsewhere.view()):
        assert isinstance(seen.error, AccountBlocked)
        assert seen.error.api_code == 1102
        assert seen.error.message == (
            "calls on account 'main' paused after an earlier failure: "
            "Kling code 1102: Resource pack depleted"
        )
        assert not seen.probe_due
    assert not breaker.take_probe()


def test_an_auth_failure_pauses_as_auth_failed(make_breaker: Factory) -> None:
    breaker = make_breaker("main")
    breaker.trip(AuthFailed("Kling code 1002: Authorization is invalid", api_code=1002))
    assert isinstance(breaker.view().error, AuthFailed)


def test_each_account_has_its_own_breaker(make_breaker: Factory) -> None:
    main, backup = make_breaker("main"), make_breaker("backup")
    main.trip(blocked())

    assert main.view().error is not None
    assert backup.view() == CLOSED


def test_after_the_pause_exactly_one_caller_may_probe(make_breaker: Factory) -> None:
    breakers = [make_breaker("main") for _ in range(4)]
    breakers[0].trip(blocked())
    wait_past(OPEN_S)

    assert all(breaker.view().probe_due for breaker in breakers)
    # The view stays paused (with the error) for everyone but the prober.
    assert all(breaker.view().error is not None for breaker in breakers)
    granted: list[bool] = []
    threads = [
        threading.Thread(target=lambda b=breaker: granted.append(b.take_probe()))
        for breaker in breakers
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 1


def test_a_probe_that_passes_closes_the_breaker_everywhere(make_breaker: Factory) -> None:
    prober, elsewhere = make_breaker("main"), make_breaker("main")
    prober.trip(blocked())
    wait_past(OPEN_S)
    assert prober.take_probe()

    prober.probe_passed()
    wait_past(0)

    assert prober.view() == CLOSED
    assert elsewhere.view() == CLOSED


def test_a_probe_refused_again_pauses_the_account_for_another_period(
    make_breaker: Factory,
) -> None:
    prober, elsewhere = make_breaker("main"), make_breaker("main")
    prober.trip(blocked())
    wait_past(OPEN_S)
    assert prober.take_probe()

    prober.trip(blocked())
    wait_past(0)

    assert not elsewhere.view().probe_due
    assert not elsewhere.take_probe()
    wait_past(OPEN_S)
    assert elsewhere.take_probe()


def test_an_abandoned_probe_goes_to_the_next_caller(make_breaker: Factory) -> None:
    prober, elsewhere = make_breaker("main"), make_breaker("main")
    prober.trip(blocked())
    wait_past(OPEN_S)
    assert prober.take_probe()
    assert not elsewhere.take_probe()

    prober.probe_abandoned()

    assert elsewhere.take_probe()
    assert elsewhere.view().error is not None


def test_a_probe_whose_caller_died_comes_back_after_its_lease(make_breaker: Factory) -> None:
    prober, elsewhere = make_breaker("main"), make_breaker("main")
    prober.trip(blocked())
    wait_past(OPEN_S)
    assert prober.take_probe()
    assert not elsewhere.take_probe()

    time.sleep(PROBE_LEASE_S + 0.05)  # the prober never says how its call went

    assert elsewhere.take_probe()


@pytest.mark.redis
def test_a_trip_in_one_process_reaches_another_within_the_recheck_time(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = keys.account_breaker(f"recheck-{uuid.uuid4().hex}")
    here = RedisBreaker(client, open_s=5.0, key=key, account="main", recheck_s=0.2)
    there = RedisBreaker(client, open_s=5.0, key=key, account="main", recheck_s=0.2)
    try:
        assert there.view() == CLOSED
        here.trip(blocked())
        # Trusted for the recheck time, then read again.
        assert there.view() == CLOSED
        time.sleep(0.25)
        assert isinstance(there.view().error, AccountBlocked)
        assert client.pttl(key) > 4000
    finally:
        client.delete(key, f"{key}:probe_due", f"{key}:probe")
        client.close()


@pytest.mark.redis
def test_the_check_before_a_call_sees_a_trip_elsewhere_at_once(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = keys.account_breaker(f"now-{uuid.uuid4().hex}")
    here = RedisBreaker(client, open_s=5.0, key=key, account="main", recheck_s=30.0)
    there = RedisBreaker(client, open_s=5.0, key=key, account="main", recheck_s=30.0)
    try:
        assert there.view() == CLOSED  # trusted for 30 s from now on
        here.trip(blocked())

        # The last check before a call reads the store, and what it saw shows to view() too.
        assert isinstance(there.view_now().error, AccountBlocked)
        assert isinstance(there.view().error, AccountBlocked)
    finally:
        client.delete(key, f"{key}:probe_due", f"{key}:probe")
        client.close()


def test_an_unreachable_store_leaves_calls_flowing() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    breaker = RedisBreaker(client, open_s=5.0, account="main")

    breaker.trip(blocked())

    assert breaker.view() == CLOSED
    assert breaker.take_probe()
    client.close()
