"""The in-process outcome store (no REDIS_URL): bounded by count, with leases that need no
renewal. Its protocol is the Redis store's (tests/worker/coordination/test_job_protocol.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from contract.results import Result
from worker.coordination.outcomes import is_lasting
from worker.coordination.outcomes_local import LocalOutcomeStore
from worker.errors import AuthFailed, VideoRejected
from worker.pipeline import failed


def outcome(job_id: str, error: VideoRejected | AuthFailed | None = None) -> Result:
    error = error or VideoRejected("clip rejected (data.status=2): too short")
    return failed(job_id, error.to_result_error(), source=None, metadata={}, attempts=1,
                  submitted_at=datetime.now(UTC))  # fmt: skip


def test_the_store_forgets_the_oldest_outcome_beyond_its_bound() -> None:
    store = LocalOutcomeStore(max_outcomes=2)
    for job_id in ("a", "b", "c"):
        assert store.record(outcome(job_id), "holder", lease_s=5)

    assert store.recorded("a") is None
    kept = [store.recorded(job_id) for job_id in ("b", "c")]
    assert [result.job_id if result else None for result in kept] == ["b", "c"]


def test_a_local_lease_lasts_until_released_with_no_renewal() -> None:
    # The process holding it holds the store too: nothing can outlive it, nothing to renew.
    store = LocalOutcomeStore()

    assert store.claim("job", "worker-1", lease_s=0.0).granted
    assert not store.claim("job", "worker-2", lease_s=60).granted
    assert store.lease_left_s("job", "worker-1") == float("inf")
    assert store.lease_left_s("job", "worker-2") is None


def test_outcomes_about_the_clip_are_lasting_and_the_others_passing() -> None:
    assert is_lasting(outcome("a"))
    assert not is_lasting(outcome("b", AuthFailed("Kling code 1002: bad key")))
