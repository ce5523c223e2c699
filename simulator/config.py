"""`SimulatorConfig`: the one settings object the CLI and `simulator.testing` share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simulator.accounts import SimAccount
from simulator.auth import Credentials
from simulator.faults import FaultConfig
from simulator.videos import DEFAULT_VIDEOS_PATH

#: Where the simulator listens unless told otherwise.
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Where to listen, which credentials and accounts to accept, the known videos and the
    start-up faults.

    `faults` and `accounts` are what `POST /_sim/reset` returns to. `credentials` are the
    account `default` (see simulator/accounts.py).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    credentials: Credentials = field(default_factory=Credentials)
    videos_path: Path = DEFAULT_VIDEOS_PATH
    faults: FaultConfig = field(default_factory=FaultConfig)
    accounts: tuple[SimAccount, ...] = ()
