"""Pinning a job to an account from the library and the CLI: the task message carries it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from contract.errors import InvalidJobError
from contract.settings import Settings
from contract.topology import connect, job_queue, purge_queues
from devstack.processes import ROOT, process_env
from producers import KlingVideo, Producer

pytestmark = pytest.mark.rabbitmq

KLING_JOBS = [sys.executable, "-c", "from producers.cli import main; main()"]
CLIP = KlingVideo(video_id="vid-1", task_id="task-1")


@pytest.fixture
def settings(rabbitmq_url: str) -> Settings:
    settings = Settings(_env_file=None, celery_broker_url=rabbitmq_url)
    purge_queues(settings)
    return settings


def queued_jobs(settings: Settings) -> list[dict[str, Any]]:
    """Take every message off the job queue; returns the ``job`` keyword of each."""
    jobs = []
    with connect(settings) as connection:
        queue = job_queue()(connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            _args, kwargs, _embed = json.loads(message.body)
            jobs.append(kwargs["job"])
    return jobs


def kling_jobs(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KLING_JOBS, *args],
        input=stdin,
        env=process_env(str(settings.celery_broker_url)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_submit_pins_the_account_and_leaves_it_out_when_unpinned(settings: Settings) -> None:
    with Producer(settings) as producer:
        producer.submit(CLIP, job_id="pinned", account="backup")
        producer.submit(CLIP, job_id="free")

    pinned, free = queued_jobs(settings)
    assert (pinned["job_id"], pinned["account"]) == ("pinned", "backup")
    assert free["job_id"] == "free"
    assert "account" not in free


def test_submit_many_takes_the_account_of_each_job_object(settings: Settings) -> None:
    source = CLIP.model_dump()
    with Producer(settings) as producer:
        producer.submit_many([{"source": source, "account": "main"}, {"source": source}])

    assert [job.get("account") for job in queued_jobs(settings)] == ["main", None]


def test_a_bad_account_name_is_refused_before_anything_is_sent(settings: Settings) -> None:
    source = CLIP.model_dump()
    with Producer(settings) as producer, pytest.raises(InvalidJobError, match="job 2: account"):
        producer.submit_many([{"source": source}, {"source": source, "account": "no spaces"}])
    assert queued_jobs(settings) == []


def test_the_cli_pins_one_job_with_account(settings: Settings) -> None:
    done = kling_jobs(
        settings,
        "submit",
        "--video-id",
        "v",
        "--task-id",
        "t",
        "--account",
        "main",
        "--job-id",
        "j",
    )

    assert done.returncode == 0, done.stderr
    (job,) = queued_jobs(settings)
    assert (job["job_id"], job["account"]) == ("j", "main")


def test_the_cli_reads_accounts_from_file_lines(settings: Settings, tmp_path: Path) -> None:
    source = json.dumps(CLIP.model_dump())
    lines = f'{{"source": {source}, "account": "backup"}}\n{{"source": {source}}}\n'

    done = kling_jobs(settings, "submit", "--file", "-", stdin=lines)

    assert done.returncode == 0, done.stderr
    assert [job.get("account") for job in queued_jobs(settings)] == ["backup", None]


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["--video-id", "v", "--task-id", "t", "--account", "a b"], "", "account"),
        (["--file", "-", "--account", "main"], "{}\n", "--account go with a single job"),
        (["--file", "-"], '{"source": {"kind": "url", "video_url": "https://h/a.mp4"}, '
         '"account": ""}\n', "line 1: account"),
    ],
    ids=["bad-name", "account-with-file", "bad-name-in-file"],
)  # fmt: skip
def test_the_cli_refuses_a_bad_account(
    settings: Settings, args: list[str], stdin: str, expected: str
) -> None:
    done = kling_jobs(settings, "submit", *args, stdin=stdin)

    assert done.returncode == 2
    assert expected in done.stderr
    assert queued_jobs(settings) == []
