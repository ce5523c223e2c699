"""The in-process outcome store (no REDIS_URL): bounded, and leases exclusive per job, with the
same claim protocol as the Redis store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contract.results import Result
from worker.coordination.outcomes import (
    AnsweredByHolder,
    JobLease,
    LeaseHeld,
    LocalOutcomeStore,
    worth_remembering,
)
from worker.errors import AuthFailed, VideoRejected
from worker.pipeline import failed


def outcome(job_id: str, error: VideoRejected | AuthFailed | None = None) -> Result:
    error = error or VideoRejected("clip rejected (data.status=2): too short")
    return failed(job_id, error.to_result_error(), source=None, metadata={}, attempts=1,
                  submitted_at=datetime.now(UTC))  # fmt: skip


def test_the_store_forgets_the_oldest_outcome_beyond_its_bound() -> None:
    store = LocalOutcomeStore(max_outcomes=2)
    for job_id in ("a", "b", "c"):
        store.record(outcome(job_id))

    assert store.recorded("a") is None
    kept = [store.recorded(job_id) for job_id in ("b", "c")]
    assert [result.job_id if result else None for result in kept] == ["b", "c"]


def test_a_lease_is_exclusive_until_released() -> None:
    store = LocalOutcomeStore()

    assert store.claim("job", "worker-1", lease_s=60).granted
    assert not store.claim("job", "worker-2", lease_s=60).granted
    store.release("job", "worker-2")  # not the holder: no effect
    assert not store.claim("job", "worker-2", lease_s=60).granted
    store.release("job", "worker-1")
    assert store.claim("job", "worker-2", lease_s=60).granted


def test_a_local_lease_lasts_until_released_with_no_renewal() -> None:
    # The process holding it holds the store too: nothing can outlive it, nothing to renew.
    store = LocalOutcomeStore()

    assert store.claim("job", "worker-1", lease_s=0.0).granted
    assert not store.claim("job", "worker-2", lease_s=60).granted


def test_a_claim_returns_the_recorded_outcome_instead_of_a_lease() -> None:
    store = LocalOutcomeStore()
    store.record(outcome("job"))

    claimed = store.claim("job", "worker-1", lease_s=60)

    assert claimed.recorded is not None
    assert claimed.recorded.job_id == "job"
    assert not claimed.granted


def test_a_copy_that_waited_is_answered_once_the_holder_has_published() -> None:
    store = LocalOutcomeStore()
    lease = JobLease(store, lease_s=5)
    with lease.held("job") as hold:
        with pytest.raises(LeaseHeld), lease.held("job"):
            pytest.fail("the lease was held")
        hold.answered = True

    with pytest.raises(AnsweredByHolder), lease.held("job", waited=True):
        pytest.fail("the holder answered")
    # A new submission is tried afresh.
    with lease.held("job") as hold:
        assert hold.recorded is None


def test_a_copy_runs_the_job_when_the_holder_gave_it_back_unanswered() -> None:
    store = LocalOutcomeStore()
    assert store.claim("job", "holder", lease_s=5).granted
    assert not store.claim("job", "copy", lease_s=5).granted

    store.release("job", "holder", answered=False)

    assert store.claim("job", "copy-again", lease_s=5, waited=True).granted


def test_only_outcomes_about_the_clip_are_worth_remembering() -> None:
    assert worth_remembering(outcome("a"))
    assert not worth_remembering(outcome("b", AuthFailed("Kling code 1002: bad key")))
