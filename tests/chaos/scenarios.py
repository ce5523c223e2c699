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
from devstack.processes import Process, ProcessExited
from producers import KlingVideo, Producer, Result, S3Object, VideoUrl
from simulator.testing import RunningSimulator
from tests.chaos.fleet import (
    CHAOS_CONCURRENCY,
    Fleet,
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
from tests.chaos.garbage import (
    GARBAGE_TASK_ID,
    GARBAGE_VIDEO_ID,
    SEQ_HEADER,
    RawMessage,
    garbage,
    publish_raw,
    task_headers,
)
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


#: Worker exits a garbage run replaces (as an orchestrator would) before it gives up.
MAX_WORKER_EXITS = 3
#: Times one message may be handed back to the queue before it counts as a requeue loop.
REQUEUE_LOOP_AFTER = 3
#: A worker log line that hands a message back to the queue, with the task id it names.
_HANDED_BACK = re.compile(r"Job ([\w.:-]+?):? [^\n]*?(?:handed back|returning the job)")
#: A message that could not even be dead-lettered goes back unnamed.
_DEAD_LETTER_RETURNED = "Could not dead-letter a message"
#: The job id of the valid job each garbage run submits last, through a Producer.
LAST_VALID_JOB_ID = "garbage-valid"


@dataclass
class Supervised:
    """A garbage run's workers, each replaced when it exits, up to :data:`MAX_WORKER_EXITS`
    times; every exit is kept with the end of its log."""

    fleet: Fleet
    running: list[Process] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)

    @property
    def gave_up(self) -> bool:
        return len(self.exits) > MAX_WORKER_EXITS

    def start(self) -> None:
        """One more worker; one that dies while starting counts as an exit, and is replaced."""
        while not self.gave_up:
            try:
                self.running.append(self.fleet.start_worker())
                return
            except ProcessExited as exc:
                self.exits.append(str(exc)[-3000:])

    def check(self) -> None:
        """Replace every worker that has exited since the last look."""
        for process in list(self.running):
            if process.popen.poll() is None:
                continue
            self.running.remove(process)
            self.exits.append(
                f"{process.name} exited ({process.popen.returncode}):\n{process.log()[-3000:]}"
            )
            self.start()


@dataclass(frozen=True)
class GarbageSummary:
    """What became of a garbage run's messages (the valid job sent last left out)."""

    messages: int
    valid_jobs: int
    results: int
    succeeded: int
    invalid_job: int
    dead_letters: int
    without_one_outcome: int
    worker_exits: int
    handed_back: int
    requeue_loops: int
    left_on_queue: int
    seconds: float

    def lines(self) -> list[str]:
        return [
            f"messages: {self.messages} ({self.valid_jobs} valid jobs)",
            f"results: {self.results} ({self.succeeded} succeeded, "
            f"{self.invalid_job} invalid_job, "
            f"{self.results - self.succeeded - self.invalid_job} other)",
            f"dead letters: {self.dead_letters}",
            f"messages with ≠1 outcome: {self.without_one_outcome}",
            f"worker exits: {self.worker_exits}",
            f"requeue loops (a message handed back > {REQUEUE_LOOP_AFTER} times): "
            f"{self.requeue_loops} ({self.handed_back} hand-backs in all)",
            f"left on the job queue: {self.left_on_queue}",
            f"wall time: {self.seconds:.1f} s",
        ]


def garbage_in(
    sim: RunningSimulator,
    workdir: Path,
    api_key: str,
    *,
    examples: int,
    seed: int | None = None,
    fixed: Sequence[RawMessage] = (),
    workers: int = 1,
) -> Run:
    """Publish the ``fixed`` messages and ``examples`` fuzzed ones onto the job queue (valid
    jobs among them), then one valid job; find what each message became: one result (valid
    jobs ``succeeded``, the rest ``invalid_job``) or one dead letter.

    One worker runs before the messages are published, ``workers - 1`` more start after them.
    A worker that exits is counted and replaced (up to :data:`MAX_WORKER_EXITS` times), so a
    poison message shows as exits rather than ending the run.
    """
    sim.reset()
    sim.add_video(GARBAGE_VIDEO_ID, GARBAGE_TASK_ID, duration_ms=5000)
    sent: dict[int, RawMessage] = {}
    tally = Tally()
    dead: dict[int, str] = {}
    started = time.monotonic()
    with chaos_fleet(workdir, worker_settings(sim, api_key)) as fleet:
        supervised = Supervised(fleet)
        supervised.start()
        with connect(fleet.settings) as connection:
            connection.ensure_connection(max_retries=3)
            _publish_garbage(connection, sent, fixed, examples, seed)
        for _ in range(workers - 1):
            supervised.start()
        valid = make_job(
            KlingVideo(video_id=GARBAGE_VIDEO_ID, task_id=GARBAGE_TASK_ID),
            job_id=LAST_VALID_JOB_ID,
        )
        with Producer(fleet.settings) as producer:
            producer.submit_many([valid])

        def accounted(tally: Tally) -> bool:
            for letter in take_dead_letters(fleet.settings):
                seq = letter.headers.get(SEQ_HEADER)
                key = seq if isinstance(seq, int) else -1 - len(dead)
                dead[key] = str(letter.headers.get(DEAD_LETTER_REASON_HEADER))
            if supervised.gave_up or tally.total + len(dead) >= len(sent) + 1:
                return True
            # The valid job went last: once it is done and no job is ready or held, all is in.
            return (
                LAST_VALID_JOB_ID in tally.results
                and queue_depth(fleet.settings) == 0
                and unacked_jobs(fleet.vhost) == 0
            )

        collect(
            fleet.settings,
            tally,
            until=accounted,
            timeout_s=30.0 + len(sent) / 20,
            alive=supervised.check,
        )
        settle(fleet.settings, tally, quiet_s=1.5)
        accounted(tally)
        supervised.check()
        left_on_queue = queue_depth(fleet.settings)
        still_up = [process.popen.poll() is None for process in supervised.running]
        logs = fleet.logs()
    return _garbage_run(
        sent, tally, dead, sim.stats(), started, logs, supervised.exits, still_up, left_on_queue
    )


def _publish_garbage(
    connection: Any,
    sent: dict[int, RawMessage],
    fixed: Sequence[RawMessage],
    examples: int,
    seed: int | None,
) -> None:
    """Publish ``fixed``, then ``examples`` messages hypothesis draws; each numbered in
    ``sent`` by its place."""

    def publish(message: RawMessage) -> None:
        seq = len(sent)
        sent[seq] = message.numbered(seq)
        publish_raw(connection, sent[seq])

    for message in fixed:
        publish(message)
    if not examples:
        return
    fuzz = hyp_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )(given(garbage)(publish))
    (hyp_seed(seed)(fuzz) if seed is not None else fuzz)()


def handed_back(logs: str) -> Counter[str]:
    """How many times the workers handed each message back to the queue, by task id (a
    message that could not be dead-lettered is counted under ``"(dead letter)"``)."""
    counts: Counter[str] = Counter()
    for line in logs.splitlines():
        if match := _HANDED_BACK.search(line):
            counts[match.group(1)] += 1
        elif _DEAD_LETTER_RETURNED in line:
            counts["(dead letter)"] += 1
    return counts


def _garbage_run(
    sent: dict[int, RawMessage],
    tally: Tally,
    dead: dict[int, str],
    stats: dict[str, Any],
    started: float,
    logs: str,
    exits: list[str],
    still_up: list[bool],
    left_on_queue: int,
) -> Run:
    """The run's figures and evidence: outcomes by message number, valid and not."""
    fuzzed = Counter({k: n for k, n in tally.counts.items() if k != LAST_VALID_JOB_ID})
    by_seq: Counter[int] = Counter()
    for job_id, n in fuzzed.items():
        by_seq[_seq(job_id)] += n
    by_seq.update(seq for seq in dead if seq >= 0)
    results = {job_id: tally.results[job_id] for job_id in fuzzed}
    kinds = Counter(_outcome(result) for result in results.values())
    requeues = handed_back(logs)
    summary = GarbageSummary(
        messages=len(sent),
        valid_jobs=sum(message.valid for message in sent.values()),
        results=fuzzed.total(),
        succeeded=kinds["succeeded"],
        invalid_job=kinds["invalid_job"],
        dead_letters=len(dead),
        without_one_outcome=sum(by_seq[seq] != 1 for seq in sent),
        worker_exits=len(exits),
        handed_back=requeues.total(),
        requeue_loops=sum(n > REQUEUE_LOOP_AFTER for n in requeues.values()),
        left_on_queue=left_on_queue,
        seconds=round(time.monotonic() - started, 1),
    )
    note = (
        f"{summary.succeeded} succeeded + {summary.invalid_job} invalid_job results + "
        f"{summary.dead_letters} dead letters; {summary.without_one_outcome} without one "
        f"outcome, {summary.worker_exits} worker exits, {summary.requeue_loops} requeue loops"
    )
    run = Run(
        figures("garbage in", Tally(counts=fuzzed), len(sent), stats, started, note),
        tally,
        set(),
        stats,
        evidence={
            "sent": sent,
            "dead": dead,
            "garbage_results": results,
            "outcomes_by_seq": by_seq,
            "valid_seqs": {seq for seq, message in sent.items() if message.valid},
            "valid": tally.results.get(LAST_VALID_JOB_ID),
            "left_on_queue": left_on_queue,
            "worker_exits": exits,
            "workers_up_at_end": still_up,
            "handed_back": requeues,
            "summary": summary,
            "logs": logs,
        },
    )
    run.figures.results = fuzzed.total() + len(dead)
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
