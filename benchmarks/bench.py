"""End-to-end benchmark: ``kling-worker`` against the shipped thread worker, at 200 ms and 5 s.

    python -m benchmarks.bench [--scale 1.0] [--broker rabbitmq|redis] [--paced-seconds 4]
                               [--preflight-jobs 10]

Each scenario starts ``kling-api-sim --latency-ms L`` (a subprocess), purges the queues, starts the
worker processes exactly as compose and Kubernetes run them (task events on, ``REDIS_URL`` set),
warms them up, then:

1. **burst**: submits N jobs with one ``submit_many`` and times first submit → last result
   consumed; worker CPU is the ``cpu_times`` of the worker process tree before and after, peak
   RSS is sampled every 0.1 s, and the upstream's peak in-flight calls come from ``/_sim/stats``;
2. **paced**: submits jobs at half the burst's rate for a few seconds and reports the latency
   overhead (``completed_at − submitted_at − upstream latency``), p50 and p99.

The baseline is the naive worker, ``celery -A worker worker`` with its default 200 threads;
the table gives ``kling-worker``'s ratio to it at each latency. Last, it measures what the
pre-flight adds to a ``url`` job (:mod:`benchmarks.preflight`). Only 127.0.0.1 is used; each
phase has a deadline, and the default run takes about five minutes.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from benchmarks import preflight
from benchmarks.harness import (
    BENCH_SOURCE,
    GREEN_POOL,
    Fleet,
    ResultCollector,
    RssSampler,
    Simulator,
    WorkerSpec,
    percentile,
    running_fleet,
    running_simulator,
)
from contract.settings import Settings
from contract.topology import purge_queues
from producers import Producer
from worker.command import GREEN_CONCURRENCY

#: Brokers the benchmark knows; RabbitMQ uses its own vhost when ``rabbitmqctl`` can make one.
RABBITMQ_URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/kling-bench")
RABBITMQ_FALLBACK_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: A Redis database of its own, so tests purging database 0 do not disturb a run.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
#: The workers' REDIS_URL (idempotency records, circuit breakers, fleet limits).
STATE_REDIS_URL = os.environ.get("BENCH_STATE_REDIS_URL", "redis://127.0.0.1:6379/8")
#: ``celery -A worker worker``'s threads when WORKER_CONCURRENCY is not set.
SHIPPED_THREADS = Settings.model_fields["worker_concurrency"].default
#: Longest a phase may take before the benchmark gives up on it.
BURST_TIMEOUT_S = 300.0
WARM_UP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Scenario:
    spec: WorkerSpec
    latency_ms: float
    #: Burst size at ``--scale 1``.
    jobs: int


@dataclass
class Row:
    scenario: Scenario
    jobs: int
    jobs_per_s: float
    cpu_ms_per_job: float
    peak_rss_mb: float
    overhead_p50_ms: float
    overhead_p99_ms: float
    upstream_peak: int
    failed: int


def shipped(processes: int = 1) -> WorkerSpec:
    """``celery -A worker worker -l INFO`` as compose and Kubernetes ran it before kling-worker."""
    return WorkerSpec(
        name="threads",
        pool="threads",
        concurrency=SHIPPED_THREADS,
        processes=processes,
        env={"REDIS_URL": STATE_REDIS_URL},
    )


def kling_worker(processes: int = 1) -> WorkerSpec:
    """``kling-worker -l INFO``, as compose and Kubernetes run it."""
    return WorkerSpec(
        name="kling-worker",
        pool=GREEN_POOL,
        concurrency=GREEN_CONCURRENCY,
        processes=processes,
        env={"REDIS_URL": STATE_REDIS_URL},
    )


#: What ``make bench`` runs: the baseline first at each latency, then ``kling-worker``.
SCENARIOS = (
    Scenario(shipped(), 200, 4_000),
    Scenario(kling_worker(), 200, 8_000),
    Scenario(kling_worker(processes=2), 200, 12_000),
    Scenario(shipped(), 5_000, 1_000),
    Scenario(kling_worker(), 5_000, 8_000),
)


def jobs(count: int) -> list[dict[str, Any]]:
    return [{"source": dict(BENCH_SOURCE)} for _ in range(count)]


def warm_up(producer: Producer, results: ResultCollector, fleet: Fleet, count: int) -> None:
    producer.submit_many(jobs(count))
    if not results.wait_for(count, WARM_UP_TIMEOUT_S):
        logs = "\n".join(log.read_text()[-2000:] for log in fleet.logs)
        raise SystemExit(f"the workers did not answer the warm-up jobs; their logs:\n{logs}")


def run_scenario(
    settings: Settings, sim: Simulator, scenario: Scenario, *, burst_jobs: int, paced_s: float
) -> Row:
    spec = scenario.spec
    purge_queues(settings)
    with (
        running_fleet(settings, sim, spec) as fleet,
        ResultCollector(settings) as results,
        Producer(settings) as producer,
    ):
        warm_up(producer, results, fleet, max(4, 2 * spec.processes))
        batch = jobs(burst_jobs)
        sim.reset()
        results.reset()
        cpu_before = fleet.cpu_s()
        with RssSampler(fleet) as rss:
            started = time.perf_counter()
            producer.submit_many(batch)
            done = results.wait_for(burst_jobs, BURST_TIMEOUT_S)
        cpu_s = fleet.cpu_s() - cpu_before
        burst = results.collected
        if not done:
            print(f"  {spec.name}: only {burst.count} of {burst_jobs} results", file=sys.stderr)
        elapsed = burst.last_at - started
        rate = burst.count / elapsed if elapsed > 0 else 0.0
        upstream_peak = int(sim.stats()["peak_in_flight"])
        failed = burst.count - burst.statuses.get("succeeded", 0)
        overheads = paced(producer, results, rate / 2, paced_s, scenario.latency_ms / 1000)
    return Row(
        scenario=scenario,
        jobs=burst.count,
        jobs_per_s=rate,
        cpu_ms_per_job=1000 * cpu_s / max(1, burst.count),
        peak_rss_mb=rss.peak_bytes / 2**20,
        overhead_p50_ms=1000 * percentile(overheads, 0.5),
        overhead_p99_ms=1000 * percentile(overheads, 0.99),
        upstream_peak=upstream_peak,
        failed=failed,
    )


def paced(
    producer: Producer, results: ResultCollector, rate: float, seconds: float, latency_s: float
) -> list[float]:
    """Submit at ``rate`` jobs/s for ``seconds`` in 50 ms batches; the latency overheads."""
    if seconds <= 0 or rate <= 0:
        return []
    results.reset()
    tick_s = 0.05
    sent = 0
    started = time.perf_counter()
    while (now := time.perf_counter() - started) < seconds:
        due = int(rate * now) + 1 - sent
        if due > 0:
            producer.submit_many(jobs(due))
            sent += due
        time.sleep(tick_s)
    results.wait_for(sent, 60 + latency_s)
    return [latency - latency_s for latency in results.collected.latencies_s]


def broker_name(settings: Settings) -> str:
    return "Redis" if settings.broker_is_redis else "RabbitMQ"


def rabbitmq_url() -> str:
    """The benchmark's own vhost when ``rabbitmqctl`` is at hand, else the default vhost."""
    if "BENCH_RABBITMQ_URL" in os.environ or shutil.which("rabbitmqctl") is None:
        return RABBITMQ_URL if "BENCH_RABBITMQ_URL" in os.environ else RABBITMQ_FALLBACK_URL
    vhost = RABBITMQ_URL.rsplit("/", 1)[1]
    try:
        subprocess.run(
            ["rabbitmqctl", "add_vhost", vhost], capture_output=True, timeout=60, check=False
        )
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return RABBITMQ_FALLBACK_URL
    return RABBITMQ_URL


def print_table(rows: list[Row]) -> None:
    header = (
        "| upstream | worker | jobs | jobs/s | × baseline | worker CPU ms/job | peak RSS MB "
        "| peak in flight | overhead p50 / p99 ms (at ½ rate) | failed |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    baselines: dict[float, float] = {}
    for row in rows:
        scenario = row.scenario
        spec = scenario.spec
        if spec.pool != GREEN_POOL and spec.processes == 1:
            baselines.setdefault(scenario.latency_ms, row.jobs_per_s)
        base = baselines.get(scenario.latency_ms)
        ratio = f"{row.jobs_per_s / base:.2f}" if base else "–"
        worker = (
            f"kling-worker ({spec.concurrency} greenlets)"
            if spec.pool == GREEN_POOL
            else f"celery -A worker worker ({spec.concurrency} threads)"
        )
        if spec.processes > 1:
            worker = f"{spec.processes} × {worker}"
        print(
            f"| {_latency(scenario.latency_ms)} | {worker} | {row.jobs} | {row.jobs_per_s:.1f} "
            f"| {ratio} | {row.cpu_ms_per_job:.2f} | {row.peak_rss_mb:.0f} | {row.upstream_peak} "
            f"| {_ms(row.overhead_p50_ms)} / {_ms(row.overhead_p99_ms)} | {row.failed} |"
        )


def _latency(ms: float) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--broker", default="rabbitmq", choices=("rabbitmq", "redis"))
    add("--scale", type=float, default=1.0, help="multiplies every burst's size")
    add("--only", default="", help="comma-separated scenario numbers to run (1-5), default all")
    add("--paced-seconds", type=float, default=4.0, help="length of each latency phase")
    add("--preflight-jobs", type=int, default=10, help="url jobs per clip and side (0: skip)")
    return parser


def main() -> None:
    args = _parser().parse_args()
    url = rabbitmq_url() if args.broker == "rabbitmq" else REDIS_URL
    settings = Settings(_env_file=None, celery_broker_url=url)
    chosen = {int(n) for n in args.only.split(",") if n.strip()} or set(range(1, 6))
    rows: list[Row] = []
    for number, scenario in enumerate(SCENARIOS, start=1):
        if number not in chosen:
            continue
        count = max(10, round(scenario.jobs * args.scale))
        print(
            f"running {scenario.spec.processes} × {scenario.spec.name} at "
            f"{_latency(scenario.latency_ms)}: {count} jobs",
            flush=True,
        )
        with running_simulator(scenario.latency_ms) as sim:
            rows.append(
                run_scenario(settings, sim, scenario, burst_jobs=count, paced_s=args.paced_seconds)
            )
    preflight_line = ""
    if args.preflight_jobs:
        print(f"running the pre-flight: {args.preflight_jobs} url jobs per clip", flush=True)
        preflight_line = preflight.summary(preflight.measure(args.preflight_jobs))
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} vCPU {platform.machine()}, "
        f"Python {platform.python_version()}, {broker_name(settings)}, REDIS_URL set, "
        "task events on\n"
    )
    print_table(rows)
    if preflight_line:
        print(f"\nPre-flight, per url job: {preflight_line}")


if __name__ == "__main__":
    main()
