"""``kling-worker-health --liveness``: a stuck worker fails it, a broker outage does not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devstack.processes import ROOT
from tests.ops.fleet import Fleet

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

#: A port on loopback where nothing listens: a broker that is down.
BROKER_DOWN = "amqp://guest:guest@127.0.0.1:1//"


def liveness(fleet: Fleet, node: str, **settings: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "worker.ops.healthcheck", "--liveness", "--timeout", "3"]
    return subprocess.run(
        [*command, "--node", node],
        env=fleet.env(**settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_liveness_fails_only_when_the_broker_answers_and_the_worker_does_not(fleet: Fleet) -> None:
    with fleet.workers(1) as (worker,):
        # A ping can be lost while the broker is busy: an orchestrator retries, so does the test.
        alive = next(
            (done for _ in range(3) if (done := liveness(fleet, worker.node)).returncode == 0),
            None,
        )
        stuck = liveness(fleet, "nobody@nowhere")
        outage = liveness(fleet, worker.node, CELERY_BROKER_URL=BROKER_DOWN)

    assert alive is not None
    assert stuck.returncode == 1
    assert "did not answer" in stuck.stderr
    assert outage.returncode == 0
    assert "broker cannot be reached" in outage.stdout
