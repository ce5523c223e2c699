"""Chaos scenarios, each one run of real worker processes under one kind of trouble.

Each returns its :class:`Figures` (the row ``scripts/chaos.py`` prints) and the evidence its
test asserts on. The tests run them small; the script runs them large.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given
from hypothesis import seed as hyp_seed
from hypothesis import settings as hyp_settings

from contract.jobs import Job, make_job
from contract.names import DEAD_LETTER_REASON_HEADER, JOB_QUEUE
from contract.topology import connect
from producers import KlingVideo, Producer, Result, S3Object, VideoUrl
from simulator.testing import RunningSimulator
from tests.chaos.fleet import (
    CHAOS_CONCURRENCY,
    RedisServer,
    Tally,
    chaos_fleet,
    collect,
    every,
    kill_hard,
    leased_jobs,
    queue_depth,
    recorded_outcomes,
    restart_rabbitmq,
    settle,
    take_dead_letters,
    unacked_jobs,
    worker_settings,
)
from tests.chaos.garbage import SEQ_HEADER, RawMessage, garbage, publish_raw, task_headers
from tests.chaos.secrets import CHAOS_AWS_ACCESS_KEY, CHAOS_AWS_SECRET, SUBMITTED_SIGNATURE

#: How long a scenario waits for its last result.
RESULTS_TIMEOUT_S = 120.0


@dataclass
class Figures:
    """One row of the chaos table."""

    scenario: str
    jobs: int
    results: int
    duplicates: int
    api_calls: int
    max_calls_per_video: int
    seconds: float
    note: str = ""


@dataclass
class Run:
    figures: Figures
    tally: Tally
    job_ids: set[str]
    stats: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def calls_per_video(self) -> Counter[str]:
        return Counter(self.stats.get("calls_per_video", {}))


def kling_jobs(sim: RunningSimulator, prefix: str, count: int) -> list[Job]:
    """``count`` jobs, each for a Kling video of its own registered with the simulator, so the
    simulator's ``calls_per_video`` counts calls per job."""
    jobs = []
    for n in range(count):
        video_id, task_id = f"{prefix}-video-{n}", f"{prefix}-task-{n}"
        sim.add_video(video_id, task_id, duration_ms=5000)
        jobs.append(
            make_job(KlingVideo(video_id=video_id, task_id=task_id), job_id=f"{prefix}-{n}")
        )
    return jobs


def figures(
    scenario: str, tally: Tally, jobs: int, stats: dict[str, Any], started: float, note: str = ""
) -> Figures:
    per_video = stats.get("calls_per_video", {})
    return Figures(
        scenario=scenario,
        jobs=jobs,
        results=tally.total,
        duplicates=tally.duplicates,
        api_calls=int(stats.get("calls", 0)),
        max_calls_per_video=max(per_video.values(), default=0),
        seconds=round(time.monotonic() - started, 1),
        note=note,
    )


def worker_sigkill(
    sim: RunningSimulator, workdir: Path, api_key: str, *, jobs: int, kill_after: int
) -> Run:
    """Jobs in flight against a slow API; ``kill -9`` the worker once ``kill_after`` results are
    in; a new worker finishes the rest.

    A job whose lease the dead worker held runs again once the lease lapses (seconds: the dead
    worker no longer renews it); the new worker's copy waits apart meanwhile.
    """
    sim.reset()
    sim.set_faults(latency_ms=1000, latency_jitter_ms=1000)
    batch = kling_jobs(sim, "kill", jobs)
    job_ids = {job.job_id for job in batch}
    env = worker_settings(sim, api_key, KLING_TIMEOUT_SECONDS="3", KLING_MAX_ATTEMPTS="2")
    tally = Tally()
    started = time.monotonic()
    with chaos_fleet(workdir, env) as fleet:
        first = fleet.start_worker()
        with Producer(fleet.settings) as producer:
            producer.submit_many(batch)
        collect(
            fleet.settings,
            tally,
            until=lambda t: len(t.results) >= kill_after,
            timeout_s=RESULTS_TIMEOUT_S,
            alive=first.check_alive,
        )
        state = fleet.state()
        # What the dead worker leaves behind: jobs whose outcome is recorded (a second call
        # for them would be a bug) and jobs under lease (their call may be repeated).
        unacked = unacked_jobs(fleet.vhost)
        in_flight_calls = int(sim.stats()["in_flight"])
        leased = leased_jobs(state)
        recorded = recorded_outcomes(state)
        kill_hard(first)
        second = fleet.start_worker()
        collect(
            fleet.settings,
            tally,
            until=every(job_ids),
            timeout_s=RESULTS_TIMEOUT_S,
            alive=second.check_alive,
        )
        settle(fleet.settings, tally)
        state.close()
    stats = sim.stats()
    note = f"killed with {len(leased)} leased, {unacked} unacked"
    return Run(
        figures("worker SIGKILL", tally, jobs, stats, started, note),
        tally,
        job_ids,
        stats,
        evidence={
            "recorded_at_kill": recorded,
            "leased_at_kill": leased,
            "unacked_at_kill": unacked,
            "in_flight_calls_at_kill": in_flight_calls,
        },
    )


def broker_restart(
    sim: RunningSimulator, workdir: Path, api_key: str, *, jobs: int, restart_after: int
) -> Run:
    """Half the jobs before a RabbitMQ restart, half after through the same Producer object."""
    sim.reset()
    sim.set_faults(latency_ms=300, latency_jitter_ms=300)
    batch = kling_jobs(sim, "rabbit", jobs)
    before, after = batch[: jobs // 2], batch[jobs // 2 :]
    job_ids = {job.job_id for job in batch}
    tally = Tally()
    producer_errors: list[str] = []
    started = time.monotonic()
    with chaos_fleet(workdir, worker_settings(sim, api_key)) as fleet:
        worker = fleet.start_worker()
        with Producer(fleet.settings) as producer:
            producer.submit_many(before)
            collect(
                fleet.settings,
                tally,
                until=lambda t: len(t.results) >= restart_after,
                timeout_s=RESULTS_TIMEOUT_S,
                alive=worker.check_alive,
            )
            away_s = restart_rabbitmq()
            # One by one (submit), then in bulk (submit_many), on the connection made before;
            # a call that raises is retried once, as a caller would, and the error kept.
            for job in after[:2]:
                _twice(producer_errors, partial(producer.submit, job.source, job_id=job.job_id))
            _twice(producer_errors, lambda: producer.submit_many(after[2:]))
        collect(
            fleet.settings,
            tally,
            until=every(job_ids),
            timeout_s=RESULTS_TIMEOUT_S,
            alive=worker.check_alive,
        )
        settle(fleet.settings, tally)
        worker.check_alive()
    stats = sim.stats()
    return Run(
        figures("broker restart", tally, jobs, stats, started, f"broker away {away_s:.1f} s"),
        tally,
        job_ids,
        stats,
        evidence={"worker_alive": True, "producer_errors": producer_errors},
    )


def _twice(errors: list[str], call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        call()


def redis_restart(
    sim: RunningSimulator, workdir: Path, api_key: str, *, jobs: int, down_s: float
) -> Run:
    """The idempotency store (a Redis server of our own) goes away for ``down_s`` mid-run."""
    sim.reset()
    sim.set_faults(latency_ms=500, latency_jitter_ms=500)
    batch = kling_jobs(sim, "redis", jobs)
    job_ids = {job.job_id for job in batch}
    tally = Tally()
    started = time.monotonic()
    with RedisServer(workdir) as store:
        env = worker_settings(sim, api_key, REDIS_URL=store.url)
        with chaos_fleet(workdir, env) as fleet:
            worker = fleet.start_worker()
            with Producer(fleet.settings) as producer:
                producer.submit_many(batch)
            collect(
                fleet.settings,
                tally,
                until=lambda t: len(t.results) >= CHAOS_CONCURRENCY,
                timeout_s=RESULTS_TIMEOUT_S,
                alive=worker.check_alive,
            )
            store.stop()
            time.sleep(down_s)
            store.start()
            # Jobs lost meanwhile never come: wait a bounded time, not for all of them.
            collect(
                fleet.settings,
                tally,
                until=every(job_ids),
                timeout_s=15.0,
                alive=worker.check_alive,
            )
            settle(fleet.settings, tally)
            logs = fleet.logs()
    stats = sim.stats()
    lost = tally.missing(job_ids)
    return Run(
        figures("Redis restart", tally, jobs, stats, started, f"store away {down_s:g} s"),
        tally,
        job_ids,
        stats,
        evidence={"lost": lost, "logs": logs},
    )


def upstream_faults(
    sim: RunningSimulator,
    workdir: Path,
    api_key: str,
    *,
    jobs: int,
    fail_rate: float,
    max_concurrency: int,
) -> Run:
    """Retryable failures at ``fail_rate`` and the API's parallel-task limit (1303) below the
    worker's concurrency: every job must still succeed within its attempts."""
    sim.reset()
    sim.set_faults(
        fail_rate=fail_rate,
        max_concurrency=max_concurrency,
        # "slow" holds an admitted call (after the limit is checked): calls overlap.
        slow_rate=round(1.0 - fail_rate, 3),
        slow_seconds=0.2,
        seed=20261124,
    )
    batch = kling_jobs(sim, "flaky", jobs)
    job_ids = {job.job_id for job in batch}
    env = worker_settings(
        sim,
        api_key,
        KLING_MAX_ATTEMPTS="10",
        KLING_BACKOFF_BASE_SECONDS="0.1",
        KLING_BACKOFF_MAX_SECONDS="1.0",
    )
    tally, started = run_batch(workdir, env, batch, job_ids)
    stats = sim.stats()
    attempts = Counter(result.attempts for result in tally.results.values())
    note = f"fail_rate {fail_rate:g}, limit {max_concurrency}, attempts max {max(attempts)}"
    return Run(
        figures("upstream retryable", tally, jobs, stats, started, note),
        tally,
        job_ids,
        stats,
        evidence={"attempts": attempts},
    )


def permanent_failures(
    sim: RunningSimulator, workdir: Path, api_key: str, *, jobs: int, fail_rate: float
) -> Run:
    """A share of calls refused for good (kling:1201): those jobs fail after exactly one call."""
    sim.reset()
    sim.set_faults(fail_rate=fail_rate, fail_codes=[1201], seed=7)
    batch = kling_jobs(sim, "refused", jobs)
    job_ids = {job.job_id for job in batch}
    tally, started = run_batch(workdir, worker_settings(sim, api_key), batch, job_ids)
    stats = sim.stats()
    outcomes = Counter(_outcome(result) for result in tally.results.values())
    note = ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items()))
    return Run(
        figures("upstream permanent", tally, jobs, stats, started, note),
        tally,
        job_ids,
        stats,
        evidence={"outcomes": outcomes},
    )


def run_batch(
    workdir: Path, env: dict[str, str], batch: list[Job], job_ids: set[str]
) -> tuple[Tally, float]:
    """One worker, the whole batch submitted at once, every result collected; returns the tally
    and when the run started."""
    tally = Tally()
    started = time.monotonic()
    with chaos_fleet(workdir, env) as fleet:
        worker = fleet.start_worker()
        with Producer(fleet.settings) as producer:
            producer.submit_many(batch)
        collect(
            fleet.settings,
            tally,
            until=every(job_ids),
            timeout_s=RESULTS_TIMEOUT_S,
            alive=worker.check_alive,
        )
        settle(fleet.settings, tally, quiet_s=0.5)
    return tally, started


def _outcome(result: Result) -> str:
    return result.error.type if result.error else result.status


def garbage_in(
    sim: RunningSimulator,
    workdir: Path,
    api_key: str,
    *,
    examples: int,
    seed: int | None = None,
    fixed: Sequence[RawMessage] = (),
) -> Run:
    """Publish the ``fixed`` messages and ``examples`` fuzzed ones onto the job queue, then one
    valid job; find what each message became: an ``invalid_job`` result or a dead letter."""
    sim.reset()
    sim.add_video("garbage-video", "garbage-task", duration_ms=5000)
    sent: dict[int, RawMessage] = {}
    tally = Tally()
    dead: dict[int, str] = {}
    started = time.monotonic()
    with chaos_fleet(workdir, worker_settings(sim, api_key)) as fleet:
        worker = fleet.start_worker()
        with connect(fleet.settings) as connection:
            connection.ensure_connection(max_retries=3)

            def publish(message: RawMessage) -> None:
                seq = len(sent)
                sent[seq] = message.numbered(seq)
                publish_raw(connection, sent[seq])

            for message in fixed:
                publish(message)
            if examples:
                fuzz = hyp_settings(
                    max_examples=examples,
                    deadline=None,
                    database=None,
                    derandomize=seed is None,
                    suppress_health_check=list(HealthCheck),
                    phases=[Phase.generate],
                )(given(garbage)(publish))
                (hyp_seed(seed)(fuzz) if seed is not None else fuzz)()
        valid = make_job(
            KlingVideo(video_id="garbage-video", task_id="garbage-task"), job_id="garbage-valid"
        )
        with Producer(fleet.settings) as producer:
            producer.submit_many([valid])

        def accounted(tally: Tally) -> bool:
            for letter in take_dead_letters(fleet.settings):
                seq = letter.headers.get(SEQ_HEADER)
                key = seq if isinstance(seq, int) else -1 - len(dead)
                dead[key] = str(letter.headers.get(DEAD_LETTER_REASON_HEADER))
            if tally.total + len(dead) >= len(sent) + 1:
                return True
            # The valid job went last: once it is done and no job is ready or held, all is in.
            return (
                "garbage-valid" in tally.results
                and queue_depth(fleet.settings) == 0
                and unacked_jobs(fleet.vhost) == 0
            )

        collect(
            fleet.settings,
            tally,
            until=accounted,
            timeout_s=30.0 + len(sent) / 20,
            alive=worker.check_alive,
        )
        settle(fleet.settings, tally, quiet_s=1.5)
        accounted(tally)
        worker.check_alive()
        left_on_queue = queue_depth(fleet.settings)
        logs = fleet.logs()
    stats = sim.stats()
    garbage_counts = Counter({k: n for k, n in tally.counts.items() if k != "garbage-valid"})
    by_seq: Counter[int] = Counter()
    for job_id, n in garbage_counts.items():
        by_seq[_seq(job_id)] += n
    by_seq.update(seq for seq in dead if seq >= 0)
    results = garbage_counts.total()
    run = Run(
        figures(
            "garbage in",
            Tally(counts=garbage_counts),
            len(sent),
            stats,
            started,
            f"{results} invalid_job results + {len(dead)} dead letters",
        ),
        tally,
        set(),
        stats,
        evidence={
            "sent": sent,
            "dead": dead,
            "garbage_results": {
                job_id: result
                for job_id, result in tally.results.items()
                if job_id != "garbage-valid"
            },
            "outcomes_by_seq": by_seq,
            "valid": tally.results.get("garbage-valid"),
            "left_on_queue": left_on_queue,
            "logs": logs,
        },
    )
    run.figures.results = results + len(dead)
    return run


def _seq(job_id: str) -> int:
    tail = job_id.removeprefix("fz-")
    return int(tail) if job_id.startswith("fz-") and tail.isdigit() else -1


#: A signed-URL value anywhere in a text, unless redacted.
SIGNATURE_VALUE = re.compile(
    r"(?i)(?:X-Amz-Signature|Signature|X-Amz-Credential)=(?!REDACTED)[^&\s\"'\\]+"
)


def secrets_session(
    sim: RunningSimulator, workdir: Path, api_key: str, *, s3_endpoint: str, bucket: str
) -> Run:
    """A session with distinctive fake secrets; returns every text an outsider could read:
    the task messages as Flower shows them, the worker's log, results and dead letters."""
    sim.reset()
    sim.add_video("secret-video", "secret-task", duration_ms=5000)
    signed = f"X-Amz-Credential=AKIASUBMITTED%2F20260101&X-Amz-Signature={SUBMITTED_SIGNATURE}"
    sources: dict[str, Any] = {
        "s3": S3Object(bucket=bucket, key="clips/valid_mp4.mp4"),
        "s3-missing": S3Object(bucket=bucket, key="clips/missing.mp4"),
        "signed-url": VideoUrl(video_url=f"{s3_endpoint}/{bucket}/clips/valid_mp4.mp4?{signed}"),
        "signed-url-404": VideoUrl(
            video_url=f"{s3_endpoint}/{bucket}/clips/nope.mp4?Signature={SUBMITTED_SIGNATURE}"
        ),
        "kling-retried": KlingVideo(video_id="secret-video", task_id="secret-task"),
    }
    # The first call fails with a server error, so a retry warning is logged too.
    sim.set_faults(script=["kling:5000"])
    env = worker_settings(
        sim,
        api_key,
        S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=CHAOS_AWS_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=CHAOS_AWS_SECRET,
    )
    tally = Tally()
    started = time.monotonic()
    with chaos_fleet(workdir, env) as fleet:
        with Producer(fleet.settings) as producer:
            job_ids = {
                name: producer.submit(source, job_id=f"secret-{name}", metadata={"case": name})
                for name, source in sources.items()
            }
        invalid = RawMessage(
            "invalid signed url",
            json.dumps(
                [
                    [],
                    {
                        "job": {
                            "job_id": "secret-invalid",
                            "source": {
                                "kind": "url",
                                "video_url": f"https://cdn.example.com/a.mp4?{signed}",
                                "extra": "field",
                            },
                        }
                    },
                    {},
                ]
            ).encode(),
            "application/json",
            "utf-8",
            {**task_headers(), "id": "secret-invalid", "root_id": "secret-invalid"},
        )
        garbage_letter = RawMessage(
            "dead letter with a signed url",
            f"not json {signed}".encode(),
            "application/json",
            "utf-8",
            task_headers(),
        )
        with connect(fleet.settings) as connection:
            publish_raw(connection, invalid)
            publish_raw(connection, garbage_letter)
            flower_view = peek_task_headers(connection)
        job_ids["invalid"] = "secret-invalid"
        fleet.start_worker()
        collect(
            fleet.settings,
            tally,
            until=every(set(job_ids.values())),
            timeout_s=RESULTS_TIMEOUT_S,
        )
        settle(fleet.settings, tally, quiet_s=0.5)
        dead = take_dead_letters(fleet.settings)
        logs = fleet.logs()
    stats = sim.stats()
    texts = {
        "task headers (Flower's argsrepr/kwargsrepr)": "\n".join(flower_view),
        "worker log": logs,
        "results": "\n".join(result.to_json() for result in tally.results.values()),
        # The body is the sender's, kept byte for byte by contract: only what the worker
        # added (the reason header) is its to keep clean.
        "dead letters": "\n".join(json.dumps(letter.headers, default=str) for letter in dead),
    }
    return Run(
        figures("secrets", tally, len(job_ids), stats, started),
        tally,
        set(job_ids.values()),
        stats,
        evidence={"texts": texts, "dead": dead, "requests": sim.requests()},
    )


def peek_task_headers(connection: Any) -> list[str]:
    """``argsrepr`` and ``kwargsrepr`` of every message on the job queue, as Flower would show
    them; the messages stay on the queue (never acked: back when the channel closes)."""
    channel = connection.channel()
    shown = []
    try:
        while (raw := channel.basic_get(queue=JOB_QUEUE, no_ack=False)) is not None:
            headers = raw.properties.get("application_headers") or {}
            shown.append(f"{headers.get('argsrepr')} {headers.get('kwargsrepr')}")
    finally:
        channel.close()
    return shown
