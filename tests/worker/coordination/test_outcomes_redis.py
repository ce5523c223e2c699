"""Job leases in Redis, kept alive by their holder: renewal by a live holder, what a job learns
of its lease before it calls, and lapse within seconds of the holder's death (a real process,
SIGKILLed). The claim/record/finish protocol itself: test_job_protocol.py."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from contract import keys
from devstack.processes import free_port
from worker.coordination.limits_redis import RedisLimiter
from worker.coordination.outcomes_redis import RedisOutcomeStore
from worker.coordination.pipelining import PipelinedCommands
from worker.coordination.renewal import HeldLease, LeaseRenewer

pytestmark = [pytest.mark.redis]

HOLDER = Path(__file__).with_name("lease_holder.py")


class CountingRedis(redis.Redis):
    """A real client that counts the commands it sends (one per round trip here)."""

    sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """Job ids of this test start with it; every key they made is deleted after."""
    name = f"test-leases-{uuid.uuid4().hex[:12]}"
    yield name
    found = list(client.scan_iter(f"kling:job:{name}*")) + list(client.scan_iter(f"{name}:*"))
    if found:
        client.delete(*found)


@pytest.fixture(params=["own round trips", "pipelined"])
def store(client: redis.Redis, request: pytest.FixtureRequest) -> Iterator[RedisOutcomeStore]:
    """The store each command on its own, and as a worker process runs it: pipelined with
    other commands, leases given back without waiting (in order with what follows)."""
    if request.param == "own round trips":
        yield RedisOutcomeStore(client)
        return
    commands = PipelinedCommands(client)
    yield RedisOutcomeStore(client, commands=commands)
    commands.close()


def test_one_renewal_round_trip_extends_every_lease_and_slot_of_the_process(
    redis_url: str, prefix: str
) -> None:
    client = CountingRedis(connection_pool=redis.ConnectionPool.from_url(redis_url))
    renewer = LeaseRenewer(client, tick_s=0.5)
    store = RedisOutcomeStore(client, renewer=renewer)
    limiter = RedisLimiter(
        client, max_concurrency=50, lease_s=2, key_prefix=f"{prefix}:limits", renewer=renewer
    )
    for n in range(150):
        assert store.claim(f"{prefix}-job-{n}", f"h{n}", lease_s=2).granted
    slots = [limiter.slot() for _ in range(50)]
    for slot in slots:
        slot.__enter__()
    renewer.renew_once()  # loads the script once
    before = client.sent

    report = renewer.renew_once()

    assert client.sent - before == 1
    assert report.renewed == 200
    assert not report.lost
    for slot in slots:
        slot.__exit__(None, None, None)
    client.close()


def test_a_live_holder_keeps_its_lease_past_the_lease_time(
    client: redis.Redis, prefix: str
) -> None:
    renewer = LeaseRenewer(client, tick_s=0.25)
    store = RedisOutcomeStore(client, renewer=renewer)
    job = f"{prefix}-g"
    assert store.claim(job, "holder", lease_s=1.0).granted
    renewer.start()
    try:
        time.sleep(3.0)
        assert not store.claim(job, "other", lease_s=1.0).granted
    finally:
        renewer.stop()
    # Not renewed any more: it lapses within the lease time.
    time.sleep(1.2)
    assert store.claim(job, "other", lease_s=1.0).granted


def test_a_released_lease_is_not_brought_back_by_a_renewal(
    client: redis.Redis, prefix: str
) -> None:
    renewer = LeaseRenewer(client, tick_s=0.25)
    store = RedisOutcomeStore(client, renewer=renewer)
    job = f"{prefix}-h"
    assert store.claim(job, "holder", lease_s=5).granted

    store.release(job, "holder")
    report = renewer.renew_once()

    assert report.renewed == 0
    assert not report.regained
    assert client.exists(keys.lease(job)) == 0


def test_a_lapsed_lease_is_taken_again_unless_another_worker_has_it(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    renewer = LeaseRenewer(client, tick_s=0.25)
    store = RedisOutcomeStore(client, renewer=renewer)
    lapsed, taken = f"{prefix}-i", f"{prefix}-j"
    assert store.claim(lapsed, "holder", lease_s=5).granted
    assert store.claim(taken, "holder", lease_s=5).granted
    # As after Redis lost them (a restart without persistence, an outage past the lease):
    client.delete(keys.lease(lapsed), keys.lease(taken))
    assert RedisOutcomeStore(client).claim(taken, "another-worker", lease_s=5).granted

    with caplog.at_level(logging.WARNING):
        report = renewer.renew_once()

    assert [lease.key for lease in report.regained] == [keys.lease(lapsed)]
    assert [lease.key for lease in report.lost] == [keys.lease(taken)]
    assert client.get(keys.lease(lapsed)) == b"holder"
    assert client.get(keys.lease(taken)) == b"another-worker"
    assert keys.lease(taken) not in {lease.key for lease in renewer.held()}
    assert "makes no call on it" in caplog.text
    # The job of the lost lease learns it before it would call or record.
    assert store.lease_left_s(taken, "holder") is None
    left = store.lease_left_s(lapsed, "holder")
    assert left is not None
    assert left > 4


def test_renewal_without_redis_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    renewer = LeaseRenewer(nowhere, tick_s=0.1)
    renewer.hold(HeldLease("kling:job:x:lease", "holder", lease_s=0.1))

    with caplog.at_level(logging.WARNING):
        renewer.tick()
        time.sleep(0.15)
        renewer.tick()

    messages = [record.getMessage() for record in caplog.records]
    assert any("Could not renew 1 leases" in message for message in messages)
    assert any("may have lapsed" in message for message in messages)


def test_a_killed_holders_leases_lapse_within_the_lease_time(
    redis_url: str, store: RedisOutcomeStore, prefix: str
) -> None:
    # Given a process holding 20 job leases of 1.5 s, renewing them
    lease_s, jobs = 1.5, 20
    holder = subprocess.Popen(
        [sys.executable, str(HOLDER), "--redis-url", redis_url, "--prefix", prefix,
         "--jobs", str(jobs), "--lease-s", str(lease_s)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        # While it lives, its leases outlast the lease time several times over
        time.sleep(3 * lease_s)
        assert not any(store.claim(f"{prefix}-job-{n}", "t", lease_s).granted for n in range(jobs))
        # When it is killed
        holder.kill()
        holder.wait(timeout=10)
        killed_at = time.monotonic()
        # Then every lease is free again within the lease time
        free: set[int] = set()
        while len(free) < jobs and time.monotonic() - killed_at < 3 * lease_s:
            free |= {n for n in range(jobs) if n not in free
                     and store.claim(f"{prefix}-job-{n}", "next", lease_s).granted}  # fmt: skip
            time.sleep(0.05)
        lapsed_after_s = time.monotonic() - killed_at
        assert len(free) == jobs
        assert lapsed_after_s <= lease_s + 0.5
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
