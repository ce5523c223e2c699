"""The shared store behind a Sentinel group (REDIS_SENTINELS): the fleet's outcomes and leases
follow the primary through a failover, and what reached the replica before it is kept."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contract.settings import Settings
from producers.status import job_statuses
from tests.sentinel_group import SentinelGroup, running_sentinel_group
from tests.services import require_binary
from worker.coordination.outcomes import AnsweredByHolder, JobLease
from worker.coordination.store import Coordination
from worker.errors import StoreUnavailable, VideoRejected
from worker.pipeline import failed

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Longest a failover may take here: a Sentinel calls the primary down after 1 s, then elects.
FAILOVER_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    require_binary("redis-server")
    with running_sentinel_group(Path(tmp_path_factory.mktemp("sentinel"))) as group:
        yield group


def test_the_store_follows_the_primary_through_a_failover_and_keeps_what_was_replicated(
    group: SentinelGroup,
) -> None:
    # Given a worker's store on the Sentinel group, and a job answered before the failover
    settings = Settings(_env_file=None, redis_sentinels=group.sentinels, worker_concurrency=4)
    coordination = Coordination.from_settings(settings)
    lease = JobLease(coordination.outcomes, lease_s=10)
    answered = f"sentinel-{uuid.uuid4().hex[:8]}"
    rejected = VideoRejected("clip rejected (data.status=2): too short").to_result_error()
    outcome = failed(answered, rejected, source=None, metadata={}, attempts=1,
                     submitted_at=datetime.now(UTC))  # fmt: skip
    with lease.held(answered) as hold:
        hold.record(outcome)
        hold.finish(outcome)
    assert coordination.client is not None
    coordination.client.wait(1, 5000)  # on the replica too
    try:
        # When the primary is killed
        group.kill_primary()

        # Then the store answers again once the Sentinels have promoted the replica
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S
        fresh = f"sentinel-{uuid.uuid4().hex[:8]}"
        while True:
            try:
                claim = coordination.outcomes.claim(fresh, "after-failover", 10)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store never followed the new primary"
                time.sleep(0.5)
        assert claim.granted
        assert group.primary_now() == group.replica_port
        # And the job answered before it is still answered: a copy adds nothing
        with pytest.raises(AnsweredByHolder), lease.held(answered, copy=True):
            pytest.fail("a job answered before the failover ran again")
        # And kling-jobs status reads the new primary too
        [status] = list(job_statuses(settings, [answered]))
        assert status.state == "recorded"
    finally:
        coordination.close()
