"""Run the simulator in a background thread for tests, with small typed admin helpers.

    with running_simulator(api_key="k", max_concurrency=2) as sim:
        requests.post(f"{sim.base_url}/kling/v1/videos/multi-elements/init-selection", ...)
        assert sim.stats()["calls"] == 1

Keyword arguments are `SimulatorConfig` fields (`accounts`: a tuple of `SimAccount`),
`Credentials` fields (`api_key`, `access_key`, `secret_key`) or `FaultConfig` fields
(`latency_ms`, `fail_rate`, `script`, ...).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import datetime
from typing import Any

import requests

from simulator.auth import Credentials
from simulator.config import SimulatorConfig
from simulator.faults import FaultConfig
from simulator.server import Server, start_server

#: Timeout of each admin call.
ADMIN_TIMEOUT_S = 10.0
#: The endpoint paths, relative to `base_url`.
KLING_PATH = "/v1/videos/multi-elements/init-selection"
COMET_PATH = "/kling/v1/videos/multi-elements/init-selection"


class RunningSimulator:
    """A simulator serving on 127.0.0.1; admin helpers go through its `/_sim` HTTP API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._session = requests.Session()
        self._session.trust_env = False

    @property
    def kling_url(self) -> str:
        """The endpoint as Kling serves it."""
        return self.base_url + KLING_PATH

    @property
    def comet_url(self) -> str:
        """The endpoint as CometAPI serves it."""
        return self.base_url + COMET_PATH

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._session.request(
            method, self.base_url + path, json=payload, timeout=ADMIN_TIMEOUT_S
        )
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """`GET /_sim/stats`."""
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """`GET /_sim/requests`: recent requests as {path, authorization, body}, oldest first."""
        result: list[dict[str, Any]] = self._call("GET", "/_sim/requests")
        return result

    def faults(self) -> dict[str, Any]:
        """`GET /_sim/faults`."""
        result: dict[str, Any] = self._call("GET", "/_sim/faults")
        return result

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """`POST /_sim/faults`: replace the fault settings with `faults` (FaultConfig fields)."""
        result: dict[str, Any] = self._call("POST", "/_sim/faults", faults)
        return result

    def add_video(
        self,
        video_id: str,
        task_id: str,
        duration_ms: int = 5000,
        *,
        fps: int = 30,
        width: int = 1280,
        height: int = 720,
        created_at: datetime | None = None,
    ) -> None:
        """`POST /_sim/videos`: register a Kling-generated video."""
        video: dict[str, Any] = {
            "video_id": video_id,
            "task_id": task_id,
            "duration_ms": duration_ms,
            "fps": fps,
            "width": width,
            "height": height,
        }
        if created_at is not None:
            video["created_at"] = created_at.isoformat()
        self._call("POST", "/_sim/videos", video)

    def accounts(self) -> list[dict[str, Any]]:
        """`GET /_sim/accounts`: each account's settings and live balance (no keys)."""
        result: list[dict[str, Any]] = self._call("GET", "/_sim/accounts")
        return result

    def put_account(self, name: str, **fields: Any) -> dict[str, Any]:
        """`PUT /_sim/accounts/<name>`: add or replace an account (`api_key`, `access_key`,
        `secret_key`, `max_concurrency`, `balance_units`, `billing_format`)."""
        result: dict[str, Any] = self._call("PUT", f"/_sim/accounts/{name}", fields)
        return result

    def update_account(self, name: str, **fields: Any) -> dict[str, Any]:
        """`PATCH /_sim/accounts/<name>`: change `max_concurrency`, `balance_units` or
        `billing_format` of a live account (0 units: its pack has run out)."""
        result: dict[str, Any] = self._call("PATCH", f"/_sim/accounts/{name}", fields)
        return result

    def reset(self) -> None:
        """`POST /_sim/reset`: stats, requests, script, faults and accounts back to start-up."""
        self._call("POST", "/_sim/reset")

    def close(self) -> None:
        """Close the admin HTTP session."""
        self._session.close()


def make_config(base: SimulatorConfig | None = None, **overrides: Any) -> SimulatorConfig:
    """`base` (default: 127.0.0.1, port 0) with flat overrides routed to the right sub-config."""
    config = base or SimulatorConfig(port=0)
    groups: dict[str, dict[str, Any]] = {"top": {}, "credentials": {}, "faults": {}}
    top = {f.name for f in fields(SimulatorConfig)}
    creds = {f.name for f in fields(Credentials)}
    fault = {f.name for f in fields(FaultConfig)}
    for key, value in overrides.items():
        if key in top:
            groups["top"][key] = value
        elif key in creds:
            groups["credentials"][key] = value
        elif key in fault:
            groups["faults"][key] = tuple(value) if key in ("script", "fail_codes") else value
        else:
            raise TypeError(f"unknown simulator setting {key!r}")
    config = replace(config, **groups["top"])
    return replace(
        config,
        credentials=replace(config.credentials, **groups["credentials"]),
        faults=replace(config.faults, **groups["faults"]),
    )


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None, **overrides: Any
) -> Iterator[RunningSimulator]:
    """Serve a simulator on 127.0.0.1 (a free port) in a thread with its own event loop."""
    config = make_config(config, **overrides)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: list[Server] = []
    failure: list[BaseException] = []

    async def start() -> None:
        try:
            server.append(await start_server(config))
        except Exception as exc:
            failure.append(exc)
        finally:
            started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="kling-api-sim", daemon=True)
    thread.start()
    started.wait()
    try:
        if failure:
            raise failure[0]
        sim = RunningSimulator(server[0].base_url)
        try:
            yield sim
        finally:
            sim.close()
            asyncio.run_coroutine_threadsafe(server[0].stop(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
