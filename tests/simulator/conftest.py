"""Fixtures for the simulator tests: a simulator factory and a local clip host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from simulator.testing import RunningSimulator, running_simulator
from tests.simulator.clip_host import ClipHost, serving_clips


@pytest.fixture(scope="session")
def clip_host() -> Iterator[ClipHost]:
    """The sample clips over HTTP (ranged, unranged, expired, missing) for the whole session."""
    with serving_clips() as host:
        yield host


@pytest.fixture
def make_sim() -> Iterator[Callable[..., RunningSimulator]]:
    """Factory: `make_sim(**settings)` starts a simulator that stops after the test."""
    with ExitStack() as stack:

        def make(**settings: Any) -> RunningSimulator:
            return stack.enter_context(running_simulator(**settings))

        yield make


@pytest.fixture
def sim(make_sim: Callable[..., RunningSimulator]) -> RunningSimulator:
    """A fresh simulator with default settings (any non-empty bearer accepted)."""
    return make_sim()
