"""The broker and the fleet's Redis restart under a running worker: no job is lost and nobody
has to restart anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.testing import RunningSimulator
from tests.chaos.scenarios import broker_restart, redis_restart
from tests.chaos.secrets import CHAOS_API_KEY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]


def test_a_rabbitmq_restart_loses_no_job_and_worker_and_producer_carry_on(
    chaos_sim: RunningSimulator, workdir: Path, redis_url: str
) -> None:
    # Given 20 jobs submitted and a restart of the RabbitMQ application once 5 results are in
    # (every connection on every virtual host is closed), then 20 more jobs submitted through
    # the same Producer object (a call that raises is retried once; none should):
    run = broker_restart(chaos_sim, workdir, CHAOS_API_KEY, jobs=40, restart_after=5)

    # Then every job has a result, all successes, from the worker that was running all along.
    assert not run.tally.missing(run.job_ids)
    assert {result.status for result in run.tally.results.values()} == {"succeeded"}
    assert run.evidence["worker_alive"]
    # A job whose result was published but not acked before the restart may be published
    # again (from its recorded outcome, with no second session): never more than in flight.
    assert run.tally.duplicates <= 8


def test_the_first_submit_after_a_broker_restart_succeeds(
    chaos_sim: RunningSimulator, workdir: Path, redis_url: str
) -> None:
    run = broker_restart(chaos_sim, workdir, CHAOS_API_KEY, jobs=12, restart_after=2)

    assert not run.evidence["producer_errors"]


def test_a_redis_restart_loses_no_job(
    chaos_sim: RunningSimulator, workdir: Path, redis_url: str
) -> None:
    # Given 30 jobs against an API answering in 0.5-1 s, and the fleet's Redis (a server of our
    # own, no persistence) away for 12 s once the first results are in:
    run = redis_restart(chaos_sim, workdir, CHAOS_API_KEY, jobs=30, down_s=12.0)

    # Then every job still has a result.
    assert not run.evidence["lost"], f"lost {sorted(run.evidence['lost'])}"
