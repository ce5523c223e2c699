"""End-to-end benchmark: the tuned worker against the naive baseline, on RabbitMQ and Redis.

    python -m benchmarks.bench [--brokers rabbitmq,redis] [--jobs 20000] [--baseline-jobs 200]
                               [--pool gevent] [--concurrency 500] [--processes 1]

For each broker it starts ``kling-api-sim --latency-ms 200`` (a subprocess), purges the queues,
starts the worker processes (``celery -A worker worker``), warms them up, then:

1. **burst**: submits N jobs with one ``submit_many`` and times first submit → last result
   consumed; worker CPU is the ``cpu_times`` of the worker process tree before and after, peak
   RSS is sampled every 0.1 s, and the upstream's peak in-flight calls come from ``/_sim/stats``;
2. **paced**: submits jobs at half the burst's rate for a few seconds and reports the latency
   overhead (``completed_at − submitted_at − upstream latency``), p50 and p99.

Then it prints one table, tuned and baseline side by side, and their ratio. Only 127.0.0.1 is
used; each phase has a deadline, and the default run takes a few minutes.
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

from benchmarks.harness import (
    BENCH_SOURCE,
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

#: Brokers the benchmark knows; RabbitMQ uses its own vhost when ``rabbitmqctl`` can make one.
RABBITMQ_URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/kling-bench")
RABBITMQ_FALLBACK_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: A Redis database of its own, so tests purging database 0 do not disturb a run.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
#: The tuned workers' REDIS_URL (idempotency records, circuit breaker, fleet limits).
STATE_REDIS_URL = os.environ.get("BENCH_STATE_REDIS_URL", "redis://127.0.0.1:6379/8")
#: Longest a phase may take before the benchmark gives up on it.
BURST_TIMEOUT_S = 300.0
WARM_UP_TIMEOUT_S = 90.0


@dataclass
class Row:
    config: str
    broker: str
    jobs: int
    jobs_per_s: float
    cpu_ms_per_job: float
    peak_rss_mb: float
    overhead_p50_ms: float
    overhead_p99_ms: float
    upstream_peak: int
    failed: int


def tuned_spec(pool: str, concurrency: int, processes: int, state_url: str) -> WorkerSpec:
    # Gossip and mingle are cluster chatter a job queue does not need; task events stay on.
    # REDIS_URL as a fleet runs it: idempotency records and limits live in Redis, not in RSS.
    return WorkerSpec(
        name="tuned",
        pool=pool,
        concurrency=concurrency,
        processes=processes,
        options=("--without-gossip", "--without-mingle", "-E"),
        env={"REDIS_URL": state_url} if state_url else {},
    )


def baseline_spec() -> WorkerSpec:
    """Celery's defaults: prefork with two child processes (one per core)."""
    return WorkerSpec(name="baseline", pool="prefork", concurrency=2)


def jobs(count: int) -> list[dict[str, Any]]:
    return [{"source": dict(BENCH_SOURCE)} for _ in range(count)]


def warm_up(producer: Producer, results: ResultCollector, fleet: Fleet, count: int) -> None:
    producer.submit_many(jobs(count))
    if not results.wait_for(count, WARM_UP_TIMEOUT_S):
        logs = "\n".join(log.read_text()[-2000:] for log in fleet.logs)
        raise SystemExit(f"the workers did not answer the warm-up jobs; their logs:\n{logs}")


def run_config(
    settings: Settings,
    sim: Simulator,
    spec: WorkerSpec,
    *,
    burst_jobs: int,
    paced_s: float,
    latency_s: float,
) -> Row:
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
        overheads = paced(producer, results, rate / 2, paced_s, latency_s)
    return Row(
        config=f"{spec.name}: {spec.processes}×{spec.pool} -c {spec.concurrency}",
        broker=broker_name(settings),
        jobs=burst.count,
        jobs_per_s=rate,
        cpu_ms_per_job=1000 * cpu_s / max(1, burst.count),
        peak_rss_mb=rss.peak_bytes / 2**20,
        overhead_p50_ms=1000 * percentile(overheads, 0.5),
        overhead_p99_ms=1000 * percentile(overheads, 0.99),
        upstream_peak=upstream_peak,
        failed=failed,
    )


def producer_rate(settings: Settings, count: int) -> float:
    """Jobs/s of one ``submit_many`` of ``count`` jobs with no worker running (validation and,
    on RabbitMQ, the broker's confirms included)."""
    purge_queues(settings)
    batch = jobs(count)
    with Producer(settings) as producer:
        started = time.perf_counter()
        producer.submit_many(batch)
        elapsed = time.perf_counter() - started
    purge_queues(settings)
    return count / elapsed


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
    results.wait_for(sent, 60)
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
        "| configuration | broker | jobs | jobs/s | worker CPU ms/job | peak RSS MB "
        "| overhead p50 / p99 ms (at ½ peak) | upstream peak in flight | failed |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        print(
            f"| {row.config} | {row.broker} | {row.jobs} | {row.jobs_per_s:.1f} "
            f"| {row.cpu_ms_per_job:.2f} | {row.peak_rss_mb:.0f} "
            f"| {_ms(row.overhead_p50_ms)} / {_ms(row.overhead_p99_ms)} "
            f"| {row.upstream_peak} | {row.failed} |"
        )
    by_broker: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_broker.setdefault(row.broker, {})[row.config.split(":")[0]] = row
    for broker, found in by_broker.items():
        if "tuned" in found and "baseline" in found and found["baseline"].jobs_per_s > 0:
            ratio = found["tuned"].jobs_per_s / found["baseline"].jobs_per_s
            print(f"\n{broker}: tuned / baseline = {ratio:.0f}× jobs/s")


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--brokers", default="rabbitmq,redis", help="comma-separated: rabbitmq, redis")
    add("--jobs", type=int, default=20000, help="burst size for the tuned worker")
    add("--baseline-jobs", type=int, default=200, help="burst size for the baseline (0: skip)")
    add("--pool", default="threads", help="pool of the tuned worker (threads, gevent)")
    add("--concurrency", type=int, default=500, help="concurrency of each tuned process")
    add("--processes", type=int, default=1, help="tuned worker processes on this node")
    add(
        "--state-redis",
        default=STATE_REDIS_URL,
        help="REDIS_URL of the tuned workers (fleet state); '' runs them without",
    )
    add("--paced-seconds", type=float, default=8.0, help="length of the latency phase")
    add("--latency-ms", type=float, default=200.0, help="upstream latency of the simulator")
    return parser


def main() -> None:
    args = _parser().parse_args()
    urls = {"rabbitmq": rabbitmq_url(), "redis": REDIS_URL}
    rows: list[Row] = []
    submit_rates: dict[str, float] = {}
    latency_s = args.latency_ms / 1000
    with running_simulator(args.latency_ms) as sim:
        for broker in args.brokers.split(","):
            settings = Settings(_env_file=None, celery_broker_url=urls[broker.strip()])
            print(f"running submit_many on {broker_name(settings)}: {args.jobs} jobs", flush=True)
            submit_rates[broker_name(settings)] = producer_rate(settings, args.jobs)
            specs = [tuned_spec(args.pool, args.concurrency, args.processes, args.state_redis)]
            if args.baseline_jobs:
                specs.append(baseline_spec())
            for spec in specs:
                count = args.jobs if spec.name == "tuned" else args.baseline_jobs
                print(f"running {spec.name} on {broker_name(settings)}: {count} jobs", flush=True)
                rows.append(
                    run_config(
                        settings,
                        sim,
                        spec,
                        burst_jobs=count,
                        paced_s=args.paced_seconds if spec.name == "tuned" else 0.0,
                        latency_s=latency_s,
                    )
                )
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} vCPU "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"upstream latency {args.latency_ms:g} ms\n"
    )
    print_table(rows)
    for broker, rate in submit_rates.items():
        confirmed = " (every message confirmed by the broker)" if broker == "RabbitMQ" else ""
        print(f"{broker}: producer submit_many {rate:,.0f} jobs/s{confirmed}")


if __name__ == "__main__":
    main()
