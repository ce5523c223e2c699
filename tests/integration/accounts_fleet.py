"""A fleet of two real worker processes (``celery -A worker worker``) sharing one Redis, with
two Kling accounts from a ``KLING_ACCOUNTS_FILE``, against a simulator serving both accounts,
and Flower watching: the shared run of tests/integration/test_accounts_fleet.py.

The run goes through four phases, each on the same fleet: unpinned load (spread), pinned jobs,
one account's pack running out in the middle of a batch, and a job naming an unknown account.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from contract.jobs import Job, make_job
from contract.settings import Settings
from contract.topology import purge_queues
from devstack.processes import (
    Process,
    free_port,
    process_env,
    running,
    wait_for_http,
    wait_for_worker,
    worker_command,
)
from producers import KlingVideo, Producer, Result, VideoUrl, iter_results
from simulator.accounts import SimAccount
from simulator.auth import Credentials
from simulator.samples import SAMPLE_CLIPS
from simulator.testing import RunningSimulator, running_simulator
from tests.ops.conftest import Samples, scrape
from tests.ops.processes import FLOWER_PASSWORD, FLOWER_USER, flower_command
from tests.services import PUBLIC_BUCKET, STATE_REDIS_URL

#: Distinctive fake secrets of the two accounts: found anywhere outside a worker, a leak.
MAIN_KEY = "sk-fleet-main-SECRET-41d9c2"
BACKUP_ACCESS_KEY = "ak-fleet-backup-7e3a"
BACKUP_SECRET = "sk-fleet-backup-SECRET-0c5f8e19b2a74d36"
SECRETS = (MAIN_KEY, BACKUP_SECRET)
#: Each account's fleet-wide cap in the accounts file.
CAPS = {"main": 3, "backup": 2}
#: Units left in backup's pack when the third phase starts (then 1102).
BACKUP_UNITS = 6
WORKER_THREADS = 8
RESULTS_TIMEOUT_S = 120.0

ACCOUNTS_FILE = f"""\
[[accounts]]
name = "main"
api_key = "{MAIN_KEY}"
max_concurrency = {CAPS["main"]}

[[accounts]]
name = "backup"
access_key = "{BACKUP_ACCESS_KEY}"
secret_key = "{BACKUP_SECRET}"
max_concurrency = {CAPS["backup"]}
"""


@dataclass
class Phase:
    """One batch of jobs, their results and what the simulator saw of each account."""

    jobs: dict[str, Job]
    results: dict[str, Result]
    accounts_before: dict[str, dict[str, Any]]
    accounts_after: dict[str, dict[str, Any]]

    def delta(self, account: str, figure: str) -> float:
        return float(self.accounts_after[account][figure]) - float(
            self.accounts_before[account][figure]
        )


@dataclass
class FleetRun:
    sim: RunningSimulator
    workers: list[Process]
    flower_url: str
    metrics_urls: list[str]
    phases: dict[str, Phase] = field(default_factory=dict)
    metrics: list[Samples] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(worker.log() for worker in self.workers)

    def flower(self, path: str) -> str:
        answer = requests.get(
            self.flower_url + path, auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=10
        )
        answer.raise_for_status()
        return answer.text


def url_jobs(clip_url: str, count: int, prefix: str) -> dict[str, Job]:
    return {
        f"{prefix}-{n}": make_job(
            VideoUrl(video_url=clip_url), job_id=f"{prefix}-{n}-{uuid.uuid4().hex[:6]}",
            allow_http=True,
        )
        for n in range(count)
    }  # fmt: skip


def run_phase(run: FleetRun, settings: Settings, jobs: dict[str, Job]) -> Phase:
    before = run.sim.stats()["accounts"]
    with Producer(settings) as producer:
        producer.submit_many(list(jobs.values()))
    wanted = {job.job_id: name for name, job in jobs.items()}
    found: dict[str, Result] = {}
    deadline = time.monotonic() + RESULTS_TIMEOUT_S
    while set(wanted) - set(found) and time.monotonic() < deadline:
        for worker in run.workers:
            worker.check_alive()
        for result in iter_results(settings, idle_timeout_s=0.5):
            found[result.job_id] = result
    missing = set(wanted) - set(found)
    assert not missing, f"no result for {sorted(missing)}:\n{run.logs()[-4000:]}"
    return Phase(
        jobs=jobs,
        results={wanted[job_id]: result for job_id, result in found.items() if job_id in wanted},
        accounts_before=before,
        accounts_after=run.sim.stats()["accounts"],
    )


#: The states Flower shows for a task run that ended.
ENDED = ("SUCCESS", "FAILURE")


def wait_for_flower(run: FleetRun, job_ids: set[str]) -> None:
    deadline = time.monotonic() + RESULTS_TIMEOUT_S
    while time.monotonic() < deadline:
        tasks = json.loads(run.flower("/api/tasks"))
        # A failed job's task run ends FAILURE (worker/tasks.py, report), a success SUCCESS.
        if all(tasks.get(job_id, {}).get("state") in ENDED for job_id in job_ids):
            return
        time.sleep(0.3)
    pytest.fail("Flower did not see every task end")


def fleet_run(workdir: Path, broker_url: str, s3_endpoint: str) -> Iterator[FleetRun]:
    """Run the four phases; yields the run for the tests to read."""
    accounts = (
        SimAccount("main", Credentials(api_key=MAIN_KEY)),
        SimAccount(
            "backup",
            Credentials(access_key=BACKUP_ACCESS_KEY, secret_key=BACKUP_SECRET),
            billing_format="string",
        ),
    )
    state = redis.Redis.from_url(STATE_REDIS_URL)
    state.flushdb()
    state.close()
    settings = Settings(
        _env_file=None,
        celery_broker_url=broker_url,
        allow_http_video_urls=True,
        allow_private_video_hosts=True,
    )
    purge_queues(settings)
    accounts_file = workdir / "accounts.toml"
    accounts_file.write_text(ACCOUNTS_FILE, encoding="utf-8")
    clip_url = f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/{SAMPLE_CLIPS['valid_mp4'].filename}"
    with ExitStack() as stack:
        sim = stack.enter_context(running_simulator(accounts=accounts, latency_ms=60))
        sim.add_video("vid-fleet", "task-fleet", duration_ms=5000)
        ports = [free_port(), free_port()]
        workers = []
        for index, port in enumerate(ports, start=1):
            node = f"accounts-{index}-{uuid.uuid4().hex[:6]}@localhost"
            env = process_env(
                broker_url,
                KLING_API_BASE_URL=f"{sim.base_url}/kling",
                KLING_ACCOUNTS_FILE=str(accounts_file),
                REDIS_URL=STATE_REDIS_URL,
                KLING_TIMEOUT_SECONDS="10",
                KLING_MAX_ATTEMPTS="6",
                KLING_BACKOFF_BASE_SECONDS="0.05",
                KLING_BACKOFF_MAX_SECONDS="0.2",
                KLING_CIRCUIT_OPEN_SECONDS="300",
                ALLOW_HTTP_VIDEO_URLS="true",
                ALLOW_PRIVATE_VIDEO_HOSTS="true",
                WORKER_CONCURRENCY=str(WORKER_THREADS),
                METRICS_PORT=str(port),
                LOG_FORMAT="json",
            )
            worker = stack.enter_context(
                running(node.split("@")[0], worker_command(node, WORKER_THREADS), env, workdir)
            )
            wait_for_worker(worker, broker_url, node)
            workers.append(worker)
        flower_port = free_port()
        flower_env = process_env(broker_url, FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}")
        flower = stack.enter_context(
            running(
                "flower", flower_command(flower_port, workdir / "flower.db"), flower_env, workdir
            )
        )
        flower_url = f"http://127.0.0.1:{flower_port}"
        wait_for_http(flower, f"{flower_url}/healthcheck", "OK")
        run = FleetRun(
            sim=sim,
            workers=workers,
            flower_url=flower_url,
            metrics_urls=[f"http://127.0.0.1:{port}/metrics" for port in ports],
        )
        # 1. Unpinned load, more than both caps together: it spreads over both accounts.
        run.phases["spread"] = run_phase(run, settings, url_jobs(clip_url, 40, "spread"))
        # 2. Pinned jobs go where they are pinned; an unpinned kling job to the first account.
        kling = KlingVideo(video_id="vid-fleet", task_id="task-fleet")
        pinned = {
            **{f"main-{n}": make_job(kling, account="main") for n in range(3)},
            **{f"backup-{n}": make_job(kling, account="backup") for n in range(3)},
            "kling-unpinned": make_job(kling),
        }
        run.phases["pinned"] = run_phase(run, settings, pinned)
        # 3. backup's pack runs out in the middle of a batch.
        sim.update_account("backup", balance_units=BACKUP_UNITS)
        run.phases["pack"] = run_phase(run, settings, url_jobs(clip_url, 40, "pack"))
        # 4. After it: a job pinned to the paused account, and one naming an unknown account.
        run.phases["after"] = run_phase(
            run,
            settings,
            {
                "pinned-paused": make_job(kling, account="backup"),
                "unknown": make_job(kling, account="elsewhere"),
            },
        )
        all_ids = {r.job_id for phase in run.phases.values() for r in phase.results.values()}
        wait_for_flower(run, all_ids)
        run.metrics = [scrape(url) for url in run.metrics_urls]
        yield run
