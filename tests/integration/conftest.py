from __future__ import annotations

from collections.abc import Iterator

import pytest

from contract.topology import purge_queues
from simulator.testing import RunningSimulator
from tests.integration.stack import (
    Stack,
    clear_fleet_state,
    running_stack,
    stack_settings,
)
from tests.services import API_KEY, STATE_REDIS_URL


@pytest.fixture(scope="session", params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(scope="session")
def session_stack(broker_url: str, api_sim: RunningSimulator, s3_endpoint: str) -> Iterator[Stack]:
    settings = stack_settings(broker_url, api_sim, s3_endpoint, API_KEY, redis_url=STATE_REDIS_URL)
    with running_stack(settings, api_sim) as stack:
        yield stack


@pytest.fixture
def stack(session_stack: Stack, sim: RunningSimulator) -> Stack:
    """A running pipeline on each broker, with empty queues and a fresh simulator."""
    purge_queues(session_stack.settings)
    clear_fleet_state(session_stack.settings)
    return session_stack
