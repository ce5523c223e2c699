"""A slot given back without a call (:class:`CallNotMade`: its account was paused while it
waited) frees at once and teaches the back-off nothing, on both limiters (Redis for real)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis

from worker.coordination.limits import MIN_WINDOW_ANSWERS, CallNotMade, LocalLimiter
from worker.coordination.limits_redis import RedisLimiter
from worker.errors import UpstreamBusy

#: A cap with room for a whole window of refused calls, whose slots stay taken a while.
CAP = 2 * MIN_WINDOW_ANSWERS
#: A Redis database of these tests' own.
DATABASE = 11

Limiter = LocalLimiter | RedisLimiter


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    if request.param == "local":
        yield LocalLimiter(max_concurrency=CAP)
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(f"{url.rsplit('/', 1)[0]}/{DATABASE}")
    shared = RedisLimiter(
        client,
        max_concurrency=CAP,
        lease_s=30.0,
        key_prefix=f"kling:test-unmade:{uuid.uuid4().hex}",
    )
    yield shared
    shared.reset()
    shared.close()


def call_not_made(limiter: Limiter) -> None:
    with pytest.raises(CallNotMade), limiter.slot():
        raise CallNotMade("account paused meanwhile")


def lower_the_target(limiter: Limiter) -> float:
    """A whole window of refused calls (their slots kept a while): the target falls."""
    for _ in range(MIN_WINDOW_ANSWERS):
        with pytest.raises(UpstreamBusy), limiter.slot():
            raise UpstreamBusy("busy", api_code=1303)
    lowered = limiter.target()
    assert lowered < CAP
    return lowered


def test_an_unmade_calls_slot_is_free_at_once(limiter: Limiter) -> None:
    call_not_made(limiter)
    assert limiter.held() == 0

    # Every slot of the cap can be taken after it.
    with ExitStack() as stack:
        for _ in range(CAP):
            stack.enter_context(limiter.slot())
        assert limiter.held() == CAP


def test_an_unmade_call_does_not_grow_a_lowered_target(limiter: Limiter) -> None:
    lowered = lower_the_target(limiter)

    call_not_made(limiter)
    assert limiter.target() == lowered

    with limiter.slot():  # an answer that is not busy does
        pass
    assert limiter.target() > lowered
