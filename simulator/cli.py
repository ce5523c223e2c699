"""`kling-api-sim`: serve the simulator from the command line until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from simulator.accounts import AccountConfigError, read_accounts_file
from simulator.auth import Credentials
from simulator.config import DEFAULT_HOST, DEFAULT_PORT, SimulatorConfig
from simulator.faults import DEFAULT_FAIL_CODES, FaultConfig, FaultConfigError
from simulator.server import start_server
from simulator.videos import DEFAULT_VIDEOS_PATH, VideoError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-api-sim",
        description="A faithful simulator of Kling's init-selection API (direct and via CometAPI).",
    )
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (default 8000)")
    add("--api-key", default=os.environ.get("KLING_API_KEY"), help="bearer key to accept")
    add("--access-key", default=os.environ.get("KLING_ACCESS_KEY"), help="JWT issuer to accept")
    add("--secret-key", default=os.environ.get("KLING_SECRET_KEY"), help="JWT HS256 secret")
    add("--videos", type=Path, default=DEFAULT_VIDEOS_PATH, help="JSON list of known videos")
    add("--seed", type=int, default=None, help="seed of the random faults")
    add("--latency-ms", type=float, default=0.0, help="added to every answer")
    add("--latency-jitter-ms", type=float, default=0.0, help="uniform extra latency, 0..this")
    add("--fail-rate", type=float, default=0.0, help="fraction answering one of --fail-codes")
    add(
        "--fail-codes",
        default=",".join(map(str, DEFAULT_FAIL_CODES)),
        help="comma-separated Kling codes for --fail-rate (default %(default)s)",
    )
    add("--gateway-429-rate", type=float, default=0.0, help="fraction of CometAPI 429 answers")
    add("--gateway-503-rate", type=float, default=0.0, help="fraction of CometAPI 503 answers")
    add("--html-rate", type=float, default=0.0, help="fraction of HTTP 200 HTML pages")
    add("--drop-rate", type=float, default=0.0, help="fraction of connections closed unanswered")
    add("--slow-rate", type=float, default=0.0, help="fraction answered after --slow-seconds")
    add("--slow-seconds", type=float, default=60.0, help="delay of slow answers (default 60)")
    add("--max-concurrency", type=int, default=None, help="calls in flight before 429/1303")
    add(
        "--accounts-file",
        type=Path,
        default=None,
        help="TOML [[accounts]]: name, api_key or access_key+secret_key, max_concurrency, "
        "balance_units, billing_format (a worker's KLING_ACCOUNTS_FILE is read too)",
    )
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> SimulatorConfig:
    """The SimulatorConfig the command line asks for; exits with status 2 on a bad flag."""
    parser = _parser()
    args = parser.parse_args(argv)
    if bool(args.access_key) != bool(args.secret_key):
        parser.error("--access-key and --secret-key go together")
    try:
        fail_codes = tuple(int(code) for code in args.fail_codes.split(",") if code.strip())
        faults = FaultConfig(
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            fail_rate=args.fail_rate,
            fail_codes=fail_codes,
            gateway_429_rate=args.gateway_429_rate,
            gateway_503_rate=args.gateway_503_rate,
            html_rate=args.html_rate,
            drop_rate=args.drop_rate,
            slow_rate=args.slow_rate,
            slow_seconds=args.slow_seconds,
            max_concurrency=args.max_concurrency,
            seed=args.seed,
        )
        accounts = read_accounts_file(args.accounts_file) if args.accounts_file else ()
    except (ValueError, FaultConfigError, AccountConfigError) as exc:
        parser.error(str(exc))
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        credentials=Credentials(args.api_key, args.access_key, args.secret_key),
        videos_path=args.videos,
        faults=faults,
        accounts=accounts,
    )


async def _serve(config: SimulatorConfig) -> None:
    server = await start_server(config)
    print(f"kling-api-sim serving at {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `kling-api-sim`."""
    config = config_from_args(argv)
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    except (VideoError, OSError) as exc:
        print(f"kling-api-sim: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
