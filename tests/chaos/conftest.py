"""Fixtures of the chaos tests: a simulator of their own (with the chaos API key) and RabbitMQ.

The simulator is not the session's ``api_sim``: the secrets test needs a distinctive key, and a
worker killed mid-call leaves calls behind that must not land in another test's stats.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.testing import RunningSimulator, running_simulator
from tests.chaos.secrets import CHAOS_API_KEY


@pytest.fixture(scope="session")
def chaos_sim_server() -> Iterator[RunningSimulator]:
    with running_simulator(api_key=CHAOS_API_KEY) as sim:
        yield sim


@pytest.fixture
def chaos_sim(chaos_sim_server: RunningSimulator, rabbitmq_url: str) -> Iterator[RunningSimulator]:
    """The chaos simulator, reset; also requires RabbitMQ (skipped locally without it)."""
    chaos_sim_server.reset()
    yield chaos_sim_server
    chaos_sim_server.reset()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
