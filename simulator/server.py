"""Start and stop the simulator on an event loop; shared by the CLI and `simulator.testing`."""

from __future__ import annotations

from aiohttp import web

from simulator.app import build_app
from simulator.config import SimulatorConfig

#: Listen backlog: a burst of a thousand new connections must not be refused.
LISTEN_BACKLOG = 4096
#: How long shutdown waits for calls in flight (slow faults) before cancelling them.
SHUTDOWN_TIMEOUT_S = 2.0


class Server:
    """A started simulator: its runner and the base URL it answers at."""

    def __init__(self, runner: web.AppRunner, base_url: str) -> None:
        self.runner = runner
        self.base_url = base_url

    async def stop(self) -> None:
        """Close the listening socket and open connections, then clean the app up."""
        await self.runner.cleanup()


async def start_server(config: SimulatorConfig) -> Server:
    """Build the app and listen on `config.host`/`config.port` (port 0: a free port)."""
    runner = web.AppRunner(
        build_app(config),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=LISTEN_BACKLOG)
    await site.start()
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    return Server(runner, f"http://{shown}:{port}")
