"""The exporter's view of the shared store, read back from a real limiter and breaker in Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from contract.settings import Settings
from worker.coordination.breaker import RedisBreaker
from worker.coordination.limits_redis import RedisLimiter
from worker.coordination.outcomes_local import LocalOutcomeStore
from worker.coordination.store import Coordination
from worker.errors import AccountBlocked, UpstreamBusy
from worker.ops.fleet_state import AccountKeys, FleetStateReader, accounts_from_settings
from worker.ops.queue_probe import ProbeFailed

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def account(client: redis.Redis) -> Iterator[AccountKeys]:
    """An account on keys of its own, deleted after the test."""
    prefix = f"kling:test-fleet:{uuid.uuid4().hex}"
    yield AccountKeys(
        name="default",
        limits_prefix=f"{prefix}:limits",
        breaker_key=f"{prefix}:circuit",
        call_limit=3,
    )
    found = list(client.scan_iter(f"{prefix}:*"))
    if found:
        client.delete(*found)


def test_calls_in_flight_are_the_limiters_live_leases(
    client: redis.Redis, account: AccountKeys
) -> None:
    limiter = RedisLimiter(
        client, max_concurrency=3, lease_s=30, key_prefix=account.limits_prefix, owns_client=False
    )
    reader = FleetStateReader(client, [account])

    with limiter.slot(), limiter.slot():
        (during,) = reader.read()
    (after,) = reader.read()

    assert (during.account, during.calls_in_flight, during.call_limit) == ("default", 2, 3)
    assert during.call_target == 3.0
    assert after.calls_in_flight == 0


def test_a_lowered_target_and_an_open_breaker_are_seen(
    client: redis.Redis, account: AccountKeys
) -> None:
    account = replace(account, call_limit=40)
    limiter = RedisLimiter(
        client, max_concurrency=40, lease_s=30, key_prefix=account.limits_prefix, owns_client=False
    )
    breaker = RedisBreaker(client, open_s=30, key=account.breaker_key)
    reader = FleetStateReader(client, [account])
    (before,) = reader.read()

    def answered_busy(calls: int) -> None:
        with ExitStack() as refused:
            for _ in range(calls):
                refused.enter_context(limiter.slot())
            raise UpstreamBusy("1303: parallel tasks over the limit", http_status=429)

    # Twenty calls in flight, half refused: the fleet backs off to the ten that got through.
    with ExitStack() as through:
        for _ in range(10):
            through.enter_context(limiter.slot())
        with pytest.raises(UpstreamBusy):
            answered_busy(10)
    breaker.trip(AccountBlocked("1102: account balance is not enough", api_code=1102))
    (after,) = reader.read()

    assert not before.paused
    assert after.paused
    assert after.call_target == pytest.approx(10.0)


def test_expired_leases_of_dead_callers_are_not_in_flight(
    client: redis.Redis, account: AccountKeys
) -> None:
    seconds, micros = client.time()
    client.zadd(f"{account.limits_prefix}:slots", {"dead-holder": seconds * 1_000_000 + micros - 1})

    (state,) = FleetStateReader(client, [account]).read()

    assert state.calls_in_flight == 0


def test_without_an_accounts_file_there_is_one_account_named_default() -> None:
    (account,) = accounts_from_settings(Settings(_env_file=None, kling_max_concurrency=7))

    assert account.name == "default"
    assert account.call_limit == 7


def test_each_account_is_read_on_the_keys_its_workers_use(tmp_path: Path) -> None:
    accounts_file = tmp_path / "accounts.toml"
    accounts_file.write_text(
        '[[accounts]]\nname = "main"\napi_key = "sk-main-not-real"\nmax_concurrency = 4\n'
        '[[accounts]]\nname = "backup"\napi_key = "sk-backup-not-real"\nmax_concurrency = 2\n'
    )
    settings = Settings(_env_file=None, kling_accounts_file=accounts_file)
    # The limiters and breakers exactly as a worker's runtime makes them for these accounts.
    coordination = Coordination(
        outcomes=LocalOutcomeStore(), client=redis.Redis(), open_s=30.0, lease_s=1.0
    )

    accounts = accounts_from_settings(settings)

    assert [(a.name, a.call_limit) for a in accounts] == [("main", 4), ("backup", 2)]
    for account in accounts:
        limiter = coordination.limiter_for(
            account.name, max_concurrency=account.call_limit, max_rate=None
        )
        breaker = coordination.breaker_for(account.name)
        assert isinstance(limiter, RedisLimiter)
        assert isinstance(breaker, RedisBreaker)
        assert f"{account.limits_prefix}:slots" == limiter._slots_key
        assert f"{account.limits_prefix}:target" == limiter._target_key
        assert account.breaker_key == breaker._key


def test_a_store_that_does_not_answer_fails_the_read() -> None:
    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0")
    reader = FleetStateReader.from_settings(settings, accounts_from_settings(settings))
    with pytest.raises(ProbeFailed):
        reader.read()
