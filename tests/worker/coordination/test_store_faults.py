"""Redis faults at the worst moments of a job, through a fault proxy in front of a real Redis:
a blip at the end of a job, and renewals that stall. No job is answered twice, and none calls
on a lease that may lapse under it."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from contract import keys
from contract.settings import Settings
from tests.fault_proxy import FaultProxy, running_fault_proxy
from worker.coordination.outcomes import AnsweredByHolder, JobLease
from worker.coordination.outcomes_redis import RedisOutcomeStore
from worker.coordination.renewal import HeldLease, LeaseRenewer, tick_s_for
from worker.coordination.store import Coordination, renewal_client
from worker.errors import StoreUnavailable, UpstreamUnavailable
from worker.pipeline import failed

pytestmark = [pytest.mark.redis]


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    with running_fault_proxy("127.0.0.1", 6379) as proxy:
        yield proxy


@pytest.fixture
def direct(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def job(direct: redis.Redis) -> Iterator[str]:
    job_id = f"test-faults-{uuid.uuid4().hex[:12]}"
    yield job_id
    direct.delete(keys.outcome(job_id), keys.lease(job_id), keys.answered(job_id))


def test_a_redis_blip_as_a_job_finishes_costs_no_second_run(
    proxy: FaultProxy, direct: redis.Redis, job: str
) -> None:
    # Given a worker whose Redis goes through the proxy
    through = redis.Redis(port=proxy.port, socket_timeout=1, socket_connect_timeout=1)
    lease = JobLease(RedisOutcomeStore(through), lease_s=10)
    outcome = failed(job, UpstreamUnavailable("HTTP 503").to_result_error(), source=None,
                     metadata={}, attempts=5, submitted_at=datetime.now(UTC))  # fmt: skip
    with lease.held(job) as hold:
        hold.record(outcome)
        # When Redis is cut off just as the job finishes, and back a second later
        proxy.cut(refuse_new=True)
        back = threading.Timer(1.0, proxy.resume)
        back.start()
        hold.finish(outcome)
        back.join()
    through.close()

    # Then the finish got through: a redelivered copy neither runs the job nor answers again.
    assert direct.get(keys.answered(job)) == b"passing"
    with pytest.raises(AnsweredByHolder), JobLease(RedisOutcomeStore(direct)).held(job, copy=True):
        pytest.fail("a copy ran the job whose holder answered")


def renewing_store(
    proxy: FaultProxy, direct: redis.Redis, lease_s: float
) -> tuple[RedisOutcomeStore, LeaseRenewer]:
    """A store whose claims go straight to Redis and whose renewals go through the proxy, on
    the renewer's own connection as a worker makes it."""
    tick_s = tick_s_for(lease_s)
    settings = Settings(_env_file=None, redis_url=proxy.url("redis"))
    renewer = LeaseRenewer(renewal_client(settings, tick_s), tick_s=tick_s)
    return RedisOutcomeStore(direct, renewer=renewer), renewer


def test_one_stalled_renewal_costs_a_tick_not_the_lease(
    proxy: FaultProxy, direct: redis.Redis, job: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a held lease of 8 s renewed every 2 s through the proxy
    store, renewer = renewing_store(proxy, direct, lease_s=8.0)
    assert store.claim(job, "holder", 8.0).granted
    renewer.start()
    try:
        assert proxy.wait_until(lambda p: p.open_connections > 0, timeout_s=10)
        # When renewals stall (a renewal waiting 10 s for its reply, as before, outlived the
        # lease it was renewing)
        with caplog.at_level(logging.WARNING, logger="worker.coordination.renewal"):
            proxy.stall()
            # Then the stalled renewal gives up within its tick, well inside the lease, and the
            # lease is still this holder's when it does
            gave_up = proxy.wait_until(lambda _: "Could not renew" in caplog.text, timeout_s=8.0)
            assert gave_up, "a stalled renewal held on for longer than the lease"
            assert direct.get(keys.lease(job)) == b"holder"
            proxy.resume()
        # And the next tick renews it again: it never changed hands
        renewed = proxy.wait_until(lambda _: direct.pttl(keys.lease(job)) > 6_000, timeout_s=10)
        assert renewed, "the lease was not renewed after the stall"
        assert direct.get(keys.lease(job)) == b"holder"
    finally:
        renewer.stop()
        renewer.close()


def test_a_job_stops_before_calling_once_its_lease_cannot_be_confirmed(
    proxy: FaultProxy, direct: redis.Redis, job: str
) -> None:
    store, renewer = renewing_store(proxy, direct, lease_s=6.0)
    lease = JobLease(store, lease_s=6.0)
    with lease.held(job) as hold:
        hold.ensure_standing()  # just taken: a call may start
        renewer.start()
        try:
            # When renewals cannot reach Redis
            proxy.stall()
            assert proxy.wait_until(lambda _: (store.lease_left_s(job, hold.holder) or 0) < 3.0,
                                    timeout_s=15)  # fmt: skip
            # Then the job refuses to call while the lease is still its own in Redis
            with pytest.raises(StoreUnavailable, match="no call made"):
                hold.ensure_standing()
            assert direct.get(keys.lease(job)) == hold.holder.encode()
        finally:
            proxy.resume()
            renewer.stop()
            renewer.close()


def test_renewals_go_on_while_the_jobs_hold_every_pooled_connection(
    redis_url: str, direct: redis.Redis, job: str
) -> None:
    # Jobs waiting on a slow Redis can hold every connection of the process's pool; renewals
    # queued behind them (30 s) let every lease of the process lapse (10 s).
    settings = Settings(_env_file=None, redis_url=redis_url, worker_concurrency=4)
    coordination = Coordination.from_settings(settings)
    assert coordination.client is not None
    assert coordination.renewer is not None
    pool = coordination.client.connection_pool
    taken = [pool.get_connection() for _ in range(pool.max_connections)]
    try:
        coordination.renewer.hold(HeldLease(keys.lease(job), "holder", 10.0))
        direct.set(keys.lease(job), "holder", px=2_000)

        report = coordination.renewer.renew_once()

        assert report.renewed == 1
        assert direct.pttl(keys.lease(job)) > 5_000
    finally:
        for connection in taken:
            pool.release(connection)
        coordination.close()
