"""Run the chaos scenarios of ``tests/chaos`` at larger sizes and print a table of figures.

Needs RabbitMQ (127.0.0.1:5672, guest/guest, ``rabbitmqctl`` on the PATH) and ``redis-server``.
The broker scenario, and the fleet scenario unless ``--no-broker-restart``, restart the RabbitMQ
application: every connection on the node drops.

    .venv/bin/python scripts/chaos.py [--jobs 200] [--fuzz 2000] [--only sigkill,garbage,fleet]
        [--fleet-jobs 10000] [--workers 3] [--kills 5] [--threads 200] [--no-broker-restart]

``fleet``: ``--fleet-jobs`` jobs over ``--workers`` worker processes sharing a persistent Redis,
``--kills`` SIGKILLs at random moments (each worker replaced at once), one RabbitMQ restart, one
Redis restart, 10 % of calls answering 5000 or 1303; it prints a table of its own, with the time
from each kill to the last answer of the jobs the dead worker held.
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
from tests.chaos.recovery import FleetRun, fleet_under_fire  # noqa: E402
from tests.chaos.scenarios import (  # noqa: E402
    REQUEUE_LOOP_AFTER,
    Figures,
    GarbageSummary,
    Run,
)
from tests.chaos.secrets import CHAOS_API_KEY  # noqa: E402

COLUMNS = ("scenario", "jobs", "results", "duplicates", "api_calls", "max_calls_per_video")


def plan(jobs: int) -> dict[str, Callable[[RunningSimulator, Path], Figures]]:
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
    }


def garbage_run(sim: RunningSimulator, folder: Path, fuzz: int) -> Run:
    """``fuzz`` hypothesis-drawn messages (valid jobs among them) through the shipped worker."""
    return scenarios.garbage_in(sim, folder, CHAOS_API_KEY, examples=fuzz, seed=20261125)


def garbage_report(run: Run) -> str:
    """What became of each fuzzed message, and how the workers fared."""
    summary: GarbageSummary = run.evidence["summary"]
    lines = [f"- {line}" for line in summary.lines()]
    sent = {f"fz-{seq}": message for seq, message in run.evidence["sent"].items()}
    for task_id, n in run.evidence["handed_back"].most_common():
        if n <= REQUEUE_LOOP_AFTER:
            break
        message = sent.get(task_id)
        shown = f"{message.kind}: {message.body[:160]!r}" if message else "(not a fuzzed message)"
        lines.append(f"- handed back {n} times: {task_id} {shown}")
    lines += [f"- worker exit: {exit_note}" for exit_note in run.evidence["worker_exits"]]
    return "\n".join(lines)


def table(rows: list[Figures]) -> str:
    header = [*COLUMNS, "seconds", "note"]
    cells = [
        [str(getattr(row, name)) for name in COLUMNS] + [f"{row.seconds:.1f}", row.note]
        for row in rows
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell) + " |" for cell in cells]
    return "\n".join(lines)


def fleet_table(run: FleetRun) -> str:
    """The fleet run's summary, then one row per kill."""
    extra = run.extra_calls()
    held = set().union(*(kill.held for kill in run.kills)) if run.kills else set()
    summary = [
        "| jobs | results | without result | duplicates | api_calls | jobs called again "
        "| most extra calls | called again, not held by a killed worker | seconds |",
        "|" + "---|" * 9,
        f"| {len(run.job_ids)} | {run.tally.total} | {len(run.tally.missing(run.job_ids))} "
        f"| {run.tally.duplicates} | {run.stats.get('calls', 0)} | {len(extra)} "
        f"| {max(extra.values(), default=0)} | {len(set(extra) - held)} | {run.seconds:.1f} |",
        "",
        "| kill | at s | leases held | fleet calls in flight "
        "| kill → all its jobs running again (s) | kill → last answer of its jobs (s) "
        "| its jobs called again |",
        "|" + "---|" * 7,
    ]
    for n, kill in enumerate(run.kills, 1):
        summary.append(
            f"| {n} | {kill.at_s:.1f} | {len(kill.held)} | {kill.in_flight} "
            f"| {kill.run_again_s:.1f} | {run.recovery_s(kill):.1f} "
            f"| {len(kill.held & set(extra))} |"
        )
    return "\n".join([*summary, "", *(f"- {event}" for event in run.events)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per scenario")
    parser.add_argument("--fuzz", type=int, default=2000, help="fuzzed garbage messages")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--fleet-jobs", type=int, default=10_000, help="jobs of the fleet run")
    parser.add_argument("--workers", type=int, default=3, help="worker processes of the fleet")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs during the fleet run")
    parser.add_argument("--threads", type=int, default=200, help="threads per fleet worker")
    parser.add_argument("--latency-ms", type=int, default=1000, help="the API's answer time")
    parser.add_argument(
        "--no-broker-restart",
        action="store_true",
        help="leave RabbitMQ alone (skips the broker scenario and the fleet's broker restart)",
    )
    args = parser.parse_args(argv)
    chosen = plan(args.jobs)
    if args.no_broker_restart:
        chosen.pop("broker")
    names = args.only.split(",") if args.only else [*chosen, "garbage", "fleet"]
    chosen = {name: run for name, run in chosen.items() if name in names}
    rows: list[Figures] = []
    fleet: FleetRun | None = None
    garbage: Run | None = None
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
        if "garbage" in names:
            print(f"running garbage ({args.fuzz} messages) ...", file=sys.stderr, flush=True)
            folder = Path(workdir) / "garbage"
            folder.mkdir()
            garbage = garbage_run(sim, folder, args.fuzz)
            rows.append(garbage.figures)
        if "fleet" in names:
            print("running fleet ...", file=sys.stderr, flush=True)
            folder = Path(workdir) / "fleet"
            folder.mkdir()
            fleet = fleet_under_fire(
                sim,
                folder,
                CHAOS_API_KEY,
                jobs=args.fleet_jobs,
                workers=args.workers,
                kills=args.kills,
                threads=args.threads,
                latency_ms=args.latency_ms,
                broker_restart=not args.no_broker_restart,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
    print(f"chaos run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    if rows:
        print(table(rows))
    if garbage is not None:
        print(f"\ngarbage: {len(garbage.evidence['sent'])} fuzzed messages, then one valid job\n")
        print(garbage_report(garbage))
    if fleet is not None:
        print(f"\nfleet: {args.workers} workers of {args.threads} threads\n")
        print(fleet_table(fleet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
