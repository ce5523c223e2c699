"""Run the chaos scenarios of ``tests/chaos`` at larger sizes and print a table of figures.

Needs RabbitMQ (127.0.0.1:5672, guest/guest, ``rabbitmqctl`` on the PATH) and ``redis-server``.
The broker scenario restarts the RabbitMQ application: every connection on the node drops.

    .venv/bin/python scripts/chaos.py [--jobs 200] [--fuzz 2000] [--only sigkill,garbage]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator.testing import RunningSimulator, running_simulator  # noqa: E402
from tests.chaos import scenarios  # noqa: E402
from tests.chaos.scenarios import Figures  # noqa: E402
from tests.chaos.secrets import CHAOS_API_KEY  # noqa: E402

COLUMNS = ("scenario", "jobs", "results", "duplicates", "api_calls", "max_calls_per_video")


def plan(jobs: int, fuzz: int) -> dict[str, Callable[[RunningSimulator, Path], Figures]]:
    key = CHAOS_API_KEY
    return {
        "sigkill": lambda sim, d: (
            scenarios.worker_sigkill(sim, d, key, jobs=jobs, kill_after=jobs // 4).figures
        ),
        "broker": lambda sim, d: (
            scenarios.broker_restart(sim, d, key, jobs=jobs, restart_after=jobs // 8).figures
        ),
        "redis": lambda sim, d: (
            scenarios.redis_restart(sim, d, key, jobs=jobs // 2, down_s=4.0).figures
        ),
        "retryable": lambda sim, d: (
            scenarios.upstream_faults(
                sim, d, key, jobs=jobs, fail_rate=0.25, max_concurrency=5
            ).figures
        ),
        "permanent": lambda sim, d: (
            scenarios.permanent_failures(sim, d, key, jobs=jobs, fail_rate=0.3).figures
        ),
        "garbage": lambda sim, d: (
            scenarios.garbage_in(sim, d, key, examples=fuzz, seed=20261125).figures
        ),
    }


def table(rows: list[Figures]) -> str:
    header = [*COLUMNS, "seconds", "note"]
    cells = [
        [str(getattr(row, name)) for name in COLUMNS] + [f"{row.seconds:.1f}", row.note]
        for row in rows
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell) + " |" for cell in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per scenario")
    parser.add_argument("--fuzz", type=int, default=2000, help="fuzzed garbage messages")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args(argv)
    chosen = plan(args.jobs, args.fuzz)
    if args.only:
        chosen = {name: run for name, run in chosen.items() if name in args.only.split(",")}
    rows: list[Figures] = []
    with (
        running_simulator(api_key=CHAOS_API_KEY) as sim,
        tempfile.TemporaryDirectory(prefix="chaos-") as workdir,
    ):
        for name, run in chosen.items():
            print(f"running {name} ...", file=sys.stderr, flush=True)
            folder = Path(workdir) / name
            folder.mkdir()
            rows.append(run(sim, folder))
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(f"chaos run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
