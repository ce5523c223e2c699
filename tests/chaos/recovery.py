"""Crash-recovery scenarios at the contract's size: workers of 200 threads with hundreds of calls
in flight are killed (SIGKILL) or stopped (SIGTERM), and every job must still be answered, the
killed ones within 60 s (docs/contract.md, "Crash recovery").

The tests run them at a few hundred jobs; ``scripts/chaos.py`` runs :func:`fleet_under_fire`
at ten thousand.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from os import EX_CONFIG
from pathlib import Path
from typing import Any

import redis

from producers import Producer
from simulator.testing import RunningSimulator
from tests.chaos.fleet import (
    RedisServer,
    Tally,
    chaos_fleet,
    collect,
    every,
    held_by,
    kill_hard,
    lease_holders,
    queue_depth,
    recorded_outcomes,
    restart_rabbitmq,
    settle,
    worker_settings,
)
from tests.chaos.scenarios import kling_jobs

#: Calls in flight per worker here: the default threads of `celery -A worker worker`.
WORKER_THREADS = 200
#: The contract's bound on re-running a dead worker's jobs.
RECOVERY_BOUND_S = 60.0


def big_worker_env(
    sim: RunningSimulator, api_key: str, *, timeout_s: float, **overrides: str
) -> dict[str, str]:
    """A worker as operators run it (200 threads, default leases), against the simulator."""
    settings = {
        "WORKER_CONCURRENCY": str(WORKER_THREADS),
        "KLING_MAX_CONCURRENCY": "1000",
        "KLING_TIMEOUT_SECONDS": f"{timeout_s:g}",
        **overrides,
    }
    return worker_settings(sim, api_key, **settings)


def in_flight_at_least(sim: RunningSimulator, calls: int) -> Callable[[Tally], bool]:
    return lambda _: int(sim.stats()["in_flight"]) >= calls


#: How long a worker runs before it is worth killing (it has taken its jobs by then).
GROWN_S = 10.0


def grown(live: list[Any], born: dict[int, float]) -> list[Any]:
    return [process for process in live if time.monotonic() - born[id(process)] >= GROWN_S]


def results_at_least(count: int) -> Callable[[Tally], bool]:
    return lambda tally: len(tally.results) >= count


def video_of(job_id: str) -> str:
    """The simulator's video of a job made by :func:`kling_jobs` (``p-7`` -> ``p-video-7``)."""
    prefix, n = job_id.rsplit("-", 1)
    return f"{prefix}-video-{n}"


@dataclass
class KillRun:
    """What a SIGKILL left behind, and how the fleet answered it."""

    tally: Tally
    job_ids: set[str]
    stats: dict[str, Any]
    killed_at: float
    #: Calls the simulator had in flight when the worker died.
    in_flight_at_kill: int
    #: Jobs whose lease the dead worker held: their calls may be made again.
    held_at_kill: set[str]
    #: Jobs whose outcome was recorded before the kill: never to be called again.
    recorded_at_kill: set[str]

    @property
    def calls_per_video(self) -> Counter[str]:
        return Counter(self.stats.get("calls_per_video", {}))

    @property
    def last_answer_s(self) -> float:
        """From the kill to the last job's first result."""
        return max(self.tally.answered_at.values()) - self.killed_at


def sigkill_with_calls_in_flight(
    sim: RunningSimulator,
    workdir: Path,
    api_key: str,
    *,
    jobs: int,
    in_flight: int,
    latency_ms: int = 3000,
) -> KillRun:
    """One worker of 200 threads takes ``jobs`` jobs against an API answering in a few seconds;
    with ``in_flight`` calls under way it is SIGKILLed and a replacement is started at once."""
    sim.reset()
    sim.set_faults(latency_ms=latency_ms, latency_jitter_ms=500)
    batch = kling_jobs(sim, "crash", jobs)
    job_ids = {job.job_id for job in batch}
    tally = Tally()
    with chaos_fleet(workdir, big_worker_env(sim, api_key, timeout_s=15)) as fleet:
        first = fleet.start_worker(concurrency=WORKER_THREADS)
        with Producer(fleet.settings) as producer:
            producer.submit_many(batch)
        assert collect(
            fleet.settings,
            tally,
            until=in_flight_at_least(sim, in_flight),
            timeout_s=60,
            alive=first.check_alive,
        ), f"never {in_flight} calls in flight: {sim.stats()['in_flight']}"
        state = fleet.state()
        recorded = recorded_outcomes(state)
        kill_hard(first)
        killed_at = time.monotonic()
        # The dead worker's leases outlive it by seconds: read them now.
        held = held_by(lease_holders(state), first)
        in_flight_at_kill = int(sim.stats()["in_flight"])
        second = fleet.start_worker(concurrency=WORKER_THREADS, wait=False)
        collect(
            fleet.settings,
            tally,
            until=every(job_ids),
            timeout_s=RECOVERY_BOUND_S + 60,
            alive=second.check_alive,
        )
        settle(fleet.settings, tally)
        state.close()
    return KillRun(tally, job_ids, sim.stats(), killed_at, in_flight_at_kill, held, recorded)


@dataclass
class StopRun:
    """What a SIGTERM under load left behind."""

    tally: Tally
    job_ids: set[str]
    duplicated: set[str]
    stats: dict[str, Any]
    #: From SIGTERM to the worker's exit.
    exit_s: float
    #: Jobs whose call had started by SIGTERM.
    called_at_stop: set[str]
    #: Of those, the ones whose result was out when the worker had exited.
    answered_by_exit: set[str]
    left_on_queue: int

    @property
    def calls_per_video(self) -> Counter[str]:
        return Counter(self.stats.get("calls_per_video", {}))


def sigterm_under_load(
    sim: RunningSimulator,
    workdir: Path,
    api_key: str,
    *,
    jobs: int,
    duplicates: int,
    in_flight: int,
    timeout_s: float,
    latency_ms: int = 3000,
) -> StopRun:
    """A worker of 200 threads with ``in_flight`` calls under way, and copies of ``duplicates``
    jobs (submitted twice) waiting for their leases, gets SIGTERM; a replacement finishes."""
    sim.reset()
    sim.set_faults(latency_ms=latency_ms, latency_jitter_ms=500)
    batch = kling_jobs(sim, "term", jobs)
    job_ids = {job.job_id for job in batch}
    tally = Tally()
    with chaos_fleet(workdir, big_worker_env(sim, api_key, timeout_s=timeout_s)) as fleet:
        worker = fleet.start_worker(concurrency=WORKER_THREADS)
        with Producer(fleet.settings) as producer:
            # The copies come right behind their originals, so they find the leases held.
            producer.submit_many(
                [job for pair in zip(batch[:duplicates], batch[:duplicates], strict=True)
                 for job in pair] + batch[duplicates:]
            )  # fmt: skip
        assert collect(
            fleet.settings,
            tally,
            until=in_flight_at_least(sim, in_flight),
            timeout_s=60,
            alive=worker.check_alive,
        ), f"never {in_flight} calls in flight: {sim.stats()['in_flight']}"
        called = {job for job in job_ids if video_of(job) in sim.stats()["calls_per_video"]}
        stopped_at = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        worker.popen.wait(timeout=120)
        exit_s = time.monotonic() - stopped_at
        settle(fleet.settings, tally, quiet_s=1.0)
        answered = called & set(tally.results)
        replacement = fleet.start_worker(concurrency=WORKER_THREADS)
        collect(fleet.settings, tally, until=every(job_ids), timeout_s=120,
                alive=replacement.check_alive)  # fmt: skip
        # The copies that waited end silently once their holder answered; give them the time.
        settle(fleet.settings, tally, quiet_s=15.0)
        left = queue_depth(fleet.settings)
    duplicated = {job.job_id for job in batch[:duplicates]}
    return StopRun(tally, job_ids, duplicated, sim.stats(), exit_s, called, answered, left)


@dataclass
class Kill:
    """One SIGKILL of the fleet run."""

    at_s: float
    held: set[str]
    in_flight: int
    killed_at: float = field(repr=False, default=0.0)
    #: When each held job was seen running again (its lease held by another worker) or answered.
    taken_over_at: dict[str, float] = field(repr=False, default_factory=dict)

    @property
    def run_again_s(self) -> float:
        """From the kill until every job it held runs again on another worker (or is answered);
        infinite if one was never seen to."""
        if not self.held:
            return 0.0
        if set(self.taken_over_at) < self.held:
            return float("inf")
        return max(0.0, *(at - self.killed_at for at in self.taken_over_at.values()))


def watch_take_over(
    kill: Kill, state: redis.Redis, dead_pid: int, tally: Tally, *, timeout_s: float = 300.0
) -> threading.Thread:
    """A thread noting when each job the dead worker held runs again elsewhere (polled twice a
    second: within 0.5 s) or is answered."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while set(kill.taken_over_at) < kill.held and time.monotonic() < deadline:
            now = time.monotonic()
            try:
                holders = lease_holders(state)
            except redis.RedisError:
                holders = {}
            for job in kill.held - set(kill.taken_over_at):
                holder = holders.get(job)
                if job in tally.answered_at:
                    kill.taken_over_at[job] = min(now, tally.answered_at[job])
                elif holder is not None and holder.rsplit(":", 2)[1] != str(dead_pid):
                    kill.taken_over_at[job] = now
            time.sleep(0.5)

    thread = threading.Thread(target=watch, name="take-over-watch", daemon=True)
    thread.start()
    return thread


@dataclass
class FleetRun:
    tally: Tally
    job_ids: set[str]
    stats: dict[str, Any]
    kills: list[Kill]
    events: list[str]
    seconds: float
    attempts: dict[str, int]

    def extra_calls(self) -> dict[str, int]:
        """Per job: calls beyond those of the run that answered it (a killed run's calls)."""
        calls = self.stats.get("calls_per_video", {})
        return {
            job: calls.get(video_of(job), 0) - self.attempts.get(job, 0)
            for job in self.job_ids
            if calls.get(video_of(job), 0) > self.attempts.get(job, 0)
        }

    def recovery_s(self, kill: Kill) -> float:
        """From the kill to the last first-answer of the jobs the dead worker held."""
        answered = [self.tally.answered_at.get(job, float("inf")) for job in kill.held]
        return max([0.0, *(at - kill.killed_at for at in answered)])


def fleet_under_fire(
    sim: RunningSimulator,
    workdir: Path,
    api_key: str,
    *,
    jobs: int,
    workers: int = 3,
    kills: int = 5,
    broker_restart: bool = True,
    redis_restart: bool = True,
    fail_rate: float = 0.1,
    threads: int = WORKER_THREADS,
    latency_ms: int = 1000,
    redis_down_s: float = 3.0,
    seed: int = 20261201,
    log: Callable[[str], None] = lambda _: None,
) -> FleetRun:
    """``workers`` processes sharing a persistent Redis of their own take ``jobs`` jobs while
    ``kills`` of them are SIGKILLed (each replaced at once), RabbitMQ restarts once and Redis
    once, at random moments (by results in), and ``fail_rate`` of calls answer 5000 or 1303."""
    rng = random.Random(seed)
    sim.reset()
    sim.set_faults(latency_ms=latency_ms, latency_jitter_ms=latency_ms // 2,
                   fail_rate=fail_rate, fail_codes=[5000, 1303], seed=seed)  # fmt: skip
    batch = kling_jobs(sim, "fleet", jobs)
    job_ids = {job.job_id for job in batch}
    plan = ["kill"] * kills + ["broker"] * broker_restart + ["redis"] * redis_restart
    rng.shuffle(plan)
    marks = sorted(rng.uniform(0.05, 0.85) for _ in plan)
    tally, kill_log, events = Tally(), [], []
    watchers: list[threading.Thread] = []
    started = time.monotonic()
    with RedisServer(workdir, persistent=True) as store:
        env = big_worker_env(sim, api_key, timeout_s=10, KLING_MAX_ATTEMPTS="5",
                             REDIS_URL=store.url, WORKER_CONCURRENCY=str(threads))  # fmt: skip
        with chaos_fleet(workdir, env) as fleet:
            live = [fleet.start_worker(concurrency=threads) for _ in range(workers)]
            born = {id(process): time.monotonic() for process in live}
            with Producer(fleet.settings) as producer:
                producer.submit_many(batch)
            state = fleet.state()

            def alive() -> None:
                for process in list(live):
                    if process.popen.poll() == EX_CONFIG:
                        # Started while Redis was away, it stopped at once (as it should); the
                        # orchestrator (docker-compose's restart policy) starts it again.
                        live.remove(process)
                        live.append(fleet.start_worker(concurrency=threads, wait=False))
                        born[id(live[-1])] = time.monotonic()
                        events.append(f"worker restarted after exit {EX_CONFIG} (Redis away)")
                        log(events[-1])
                    else:
                        process.check_alive()

            for event, mark in zip(plan, marks, strict=True):
                collect(fleet.settings, tally, until=results_at_least(round(mark * jobs)),
                        timeout_s=600, alive=alive)  # fmt: skip
                at_s = time.monotonic() - started
                if event == "kill":
                    # A worker up for a while (one still starting holds nothing to recover),
                    # and another one left running: "another worker" takes the jobs over.
                    collect(fleet.settings, tally, until=lambda _: len(grown(live, born)) >= 2,
                            timeout_s=60, alive=alive)  # fmt: skip
                    at_s = time.monotonic() - started
                    victim = rng.choice(grown(live, born) or live)
                    live.remove(victim)
                    kill_hard(victim)
                    kill = Kill(at_s, set(), 0, time.monotonic())
                    kill.held = held_by(lease_holders(state), victim)
                    kill.in_flight = int(sim.stats()["in_flight"])
                    kill_log.append(kill)
                    watchers.append(watch_take_over(kill, fleet.state(), victim.popen.pid, tally))
                    live.append(fleet.start_worker(concurrency=threads, wait=False))
                    born[id(live[-1])] = time.monotonic()
                    note = f"kill {len(kill_log)} at {at_s:.1f} s: {len(kill.held)} leases held"
                elif event == "broker":
                    note = f"RabbitMQ restart at {at_s:.1f} s: away {restart_rabbitmq():.1f} s"
                else:
                    store.stop()
                    time.sleep(redis_down_s)
                    store.start()
                    note = f"Redis restart at {at_s:.1f} s: away {redis_down_s:g} s (AOF kept)"
                events.append(note)
                log(note)
            collect(fleet.settings, tally, until=every(job_ids), timeout_s=3600, alive=alive)
            settle(fleet.settings, tally, quiet_s=15.0)
            for watcher in watchers:
                watcher.join(timeout=5)
            state.close()
    seconds = time.monotonic() - started
    attempts = {job: result.attempts for job, result in tally.results.items()}
    return FleetRun(tally, job_ids, sim.stats(), kill_log, events, seconds, attempts)
