"""The once-per-job protocol (worker/coordination/outcomes.py), as a specification, on every
store: in-process, and Redis both with its own round trips and pipelined as a worker runs it.

Claim, run, record, publish, finish: one result per job, whatever copy of its message comes
when, and no call for a job whose result is out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from contract import keys
from contract.results import Result
from worker.coordination.outcomes import (
    AnsweredByHolder,
    FinishFailed,
    JobLease,
    LeaseHeld,
    OutcomeStore,
    TakenOver,
)
from worker.coordination.outcomes_local import LocalOutcomeStore
from worker.coordination.outcomes_redis import RedisOutcomeStore
from worker.coordination.pipelining import PipelinedCommands
from worker.errors import AuthFailed, StoreUnavailable, UpstreamUnavailable, VideoRejected
from worker.pipeline import failed


@pytest.fixture(params=["local", "redis", "redis pipelined"])
def store(request: pytest.FixtureRequest) -> Iterator[OutcomeStore]:
    if request.param == "local":
        yield LocalOutcomeStore()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    commands = PipelinedCommands(client) if request.param == "redis pipelined" else None
    yield RedisOutcomeStore(client, commands=commands)
    if commands is not None:
        commands.close()
    client.close()


@pytest.fixture
def job() -> Iterator[str]:
    job_id = f"test-protocol-{uuid.uuid4().hex[:12]}"
    yield job_id
    # Keys a Redis store made (the local store goes with the test).
    try:
        with redis.Redis(socket_connect_timeout=1) as client:
            client.delete(keys.outcome(job_id), keys.lease(job_id), keys.answered(job_id))
    except redis.RedisError:
        pass


def result(job_id: str, error: VideoRejected | AuthFailed | UpstreamUnavailable | None) -> Result:
    if error is None:
        error = VideoRejected("clip rejected (data.status=2): too short")
    return failed(job_id, error.to_result_error(), source=None, metadata={}, attempts=1,
                  submitted_at=datetime.now(UTC))  # fmt: skip


LASTING = VideoRejected("clip rejected (data.status=2): too short")
PASSING = UpstreamUnavailable("still failing after 5 attempts: HTTP 503")


def answer(lease: JobLease, job_id: str, outcome: Result, *, copy: bool = False) -> None:
    """One worker's whole run of the job: claim, (call), record, publish, finish."""
    with lease.held(job_id, copy=copy) as hold:
        assert hold.recorded is None, "expected to run the job"
        hold.ensure_standing()
        hold.record(outcome)
        hold.finish(outcome)


def test_a_lease_is_exclusive_until_released_and_raises_instead_of_waiting(
    store: OutcomeStore, job: str
) -> None:
    lease = JobLease(store, lease_s=5)
    with lease.held(job):
        with pytest.raises(LeaseHeld) as held, lease.held(job):
            pytest.fail("the lease was held")
        assert 0 < held.value.retry_in_s <= 5
    # Given back at the end of the block (no result): the next claim runs the job.
    with lease.held(job) as hold:
        assert hold.recorded is None


@pytest.mark.parametrize("error", [LASTING, PASSING], ids=["lasting", "passing"])
def test_a_redelivered_copy_never_runs_again_whatever_the_outcome(
    store: OutcomeStore, job: str, error: VideoRejected | UpstreamUnavailable
) -> None:
    lease = JobLease(store, lease_s=5)
    answer(lease, job, result(job, error))

    with pytest.raises(AnsweredByHolder), lease.held(job, copy=True):
        pytest.fail("ran again")


def test_a_resubmission_gets_a_lasting_outcome_again_without_a_lease(
    store: OutcomeStore, job: str
) -> None:
    lease = JobLease(store, lease_s=5)
    answer(lease, job, result(job, LASTING))

    with lease.held(job) as hold:
        assert hold.recorded is not None
        assert hold.recorded.error is not None
        assert hold.recorded.error.type == "video_rejected"
        assert not hold.leased
        # Two resubmissions at once each get the outcome: nothing is held.
        with lease.held(job) as other:
            assert other.recorded == hold.recorded


def test_a_resubmission_after_a_passing_failure_runs_afresh(store: OutcomeStore, job: str) -> None:
    lease = JobLease(store, lease_s=5)
    answer(lease, job, result(job, PASSING))

    with lease.held(job) as hold:
        assert hold.recorded is None
        assert hold.leased


def test_an_outcome_recorded_but_never_published_is_published_once_with_no_call(
    store: OutcomeStore, job: str
) -> None:
    # Given a holder that recorded its outcome and died before publishing it
    dead = JobLease(store, lease_s=5)
    with dead.held(job) as hold:
        hold.record(result(job, LASTING))
        hold.leased = False  # as if the process died here: nothing is given back
    store.release(job, hold.holder)  # its lease lapses

    # Then the next copy publishes that outcome under a lease of its own, and finishes it
    lease = JobLease(store, lease_s=5)
    with lease.held(job, copy=True) as copy:
        assert copy.recorded is not None
        assert copy.leased
        with pytest.raises(LeaseHeld), lease.held(job, copy=True):
            pytest.fail("two copies publishing at once")
        copy.finish(copy.recorded)
    # And any later copy has nothing to do
    with pytest.raises(AnsweredByHolder), lease.held(job, copy=True):
        pytest.fail("published twice")


def test_a_holder_whose_lease_another_worker_took_records_nothing(
    store: OutcomeStore, job: str
) -> None:
    lease = JobLease(store, lease_s=5)
    with lease.held(job) as hold:
        # Its lease lapsed (Redis away past the lease) and another worker took it:
        store.release(job, hold.holder)
        assert store.claim(job, "another-worker", 5).granted

        with pytest.raises(TakenOver):
            hold.record(result(job, LASTING))
    assert store.recorded(job) is None
    # (How a holder learns of the loss before it calls: the renewer, test_outcomes_redis.py.)


class FlakyStore:
    """A real store that is away for the next ``outages`` calls to ``finish`` (as in a Redis
    blip at the end of a job)."""

    def __init__(self, store: OutcomeStore, outages: int) -> None:
        self.store = store
        self.outages = outages

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def finish(self, job_id: str, holder: str, *, lasting: bool) -> None:
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("Redis: connection reset")
        self.store.finish(job_id, holder, lasting=lasting)


def test_finishing_outlasts_a_blip_so_no_copy_runs_the_job_again(
    store: OutcomeStore, job: str
) -> None:
    flaky = FlakyStore(store, outages=2)
    lease = JobLease(flaky, lease_s=5)  # type: ignore[arg-type]
    answer(lease, job, result(job, PASSING))

    with pytest.raises(AnsweredByHolder), JobLease(store).held(job, copy=True):
        pytest.fail("a copy ran the job whose holder answered")


def test_finishing_that_cannot_reach_the_store_raises_and_the_outcome_stays(
    store: OutcomeStore, job: str
) -> None:
    # Beyond the patience, the job must not be acknowledged: FinishFailed says so.
    flaky = FlakyStore(store, outages=1_000)
    lease = JobLease(flaky, lease_s=5, patience_s=0.5)  # type: ignore[arg-type]
    with pytest.raises(FinishFailed):
        answer(lease, job, result(job, PASSING))

    # The redelivered copy publishes the recorded outcome again: no call, no run.
    with JobLease(store, lease_s=5).held(job, copy=True) as copy:
        assert copy.recorded is not None
        assert copy.recorded.error is not None
        assert copy.recorded.error.type == "upstream_unavailable"
