"""``kling-worker-health``: exit 0 when this host's worker answers a ping through the broker.

A container health check: the ping goes out through the broker and the worker answers it from
its consumer loop, so a worker whose broker connection is lost, or whose loop is stuck, fails.
With ``--metrics`` it also checks that the process's metrics exporter answers.

With ``--liveness`` (a Kubernetes liveness probe) it passes while the broker itself cannot be
reached: restarting the worker does not bring a broker back, and a probe that failed then would
crash-loop every worker through an outage. It fails only when the broker answers and the worker
does not: a stuck worker, which a restart does fix.
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.request
from collections.abc import Sequence

from contract.settings import Settings
from worker.app import app

#: Node name ``celery -A worker worker`` takes when given no ``-n``.
DEFAULT_NODE = f"celery@{socket.gethostname()}"
#: Seconds to wait for the ping's answer.
DEFAULT_TIMEOUT_S = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-worker-health", description="Ping one worker node through the broker."
    )
    parser.add_argument("--node", default=DEFAULT_NODE, help="node name (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    parser.add_argument(
        "--metrics", action="store_true", help="also require METRICS_PORT to answer /metrics"
    )
    parser.add_argument(
        "--liveness",
        action="store_true",
        help="pass while the broker is unreachable; fail only if it answers and the worker not",
    )
    return parser


def broker_answers(timeout_s: float) -> bool:
    """Whether this probe itself can open a connection to the configured broker."""
    try:
        with app.connection_for_read(connect_timeout=timeout_s) as connection:
            connection.connect()
    except Exception:
        return False
    return True


def ping(node: str, timeout_s: float) -> bool:
    """Whether ``node`` answers a ping through the configured broker within ``timeout_s``."""
    replies = app.control.ping(destination=[node], timeout=timeout_s)
    return any(node in reply for reply in replies or [])


def metrics_answer(port: int, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=timeout_s
        ) as response:
            return int(response.status) == 200
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.liveness and not broker_answers(args.timeout):
        print(
            "kling-worker-health: the broker cannot be reached; the worker is not at fault "
            "(a restart would not help): live"
        )
        return
    if not ping(args.node, args.timeout):
        print(f"kling-worker-health: {args.node} did not answer", file=sys.stderr)
        sys.exit(1)
    if args.metrics:
        port = Settings().metrics_port
        if port and not metrics_answer(port, args.timeout):
            print(f"kling-worker-health: no metrics on port {port}", file=sys.stderr)
            sys.exit(1)
    print(f"kling-worker-health: {args.node} is up")


if __name__ == "__main__":
    main()
