"""The in-process outcome store (no REDIS_URL): bounded, and leases exclusive per job."""

from __future__ import annotations

from datetime import UTC, datetime

from contract.results import Result
from worker.coordination.outcomes import LocalOutcomeStore, worth_remembering
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

    assert store.claim("job", "worker-1", lease_s=60)
    assert not store.claim("job", "worker-2", lease_s=60)
    store.release("job", "worker-2")  # not the holder: no effect
    assert not store.claim("job", "worker-2", lease_s=60)
    store.release("job", "worker-1")
    assert store.claim("job", "worker-2", lease_s=60)


def test_an_expired_lease_can_be_taken_over() -> None:
    store = LocalOutcomeStore()

    assert store.claim("job", "crashed-worker", lease_s=0.0)
    assert store.claim("job", "next-worker", lease_s=60)


def test_a_claim_returns_the_recorded_outcome_instead_of_a_lease() -> None:
    store = LocalOutcomeStore()
    store.record(outcome("job"))

    claimed = store.claim("job", "worker-1", lease_s=60)

    assert isinstance(claimed, Result)
    assert claimed.job_id == "job"


def test_only_outcomes_about_the_clip_are_worth_remembering() -> None:
    assert worth_remembering(outcome("a"))
    assert not worth_remembering(outcome("b", AuthFailed("Kling code 1002: bad key")))
