"""``kling-jobs`` as a user runs it: a real process against RabbitMQ (a virtual host of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.names import TASK_NAME
from contract.results import Result
from contract.settings import Settings
from contract.topology import connect, job_queue, purge_queues
from devstack.processes import ROOT, ensure_vhost, process_env
from worker.errors import SourceNotFound
from worker.pipeline import failed
from worker.publisher import ResultPublisher

VHOST = "kling-cli-test"
KLING_JOBS = [sys.executable, "-c", "from producers.cli import main; main()"]


@pytest.fixture
def settings(rabbitmq_url: str) -> Settings:
    settings = Settings(_env_file=None, celery_broker_url=ensure_vhost(VHOST))
    purge_queues(settings)
    return settings


def kling_jobs(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = process_env(str(settings.celery_broker_url))
    return subprocess.run(
        [*KLING_JOBS, *args], input=stdin, env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def queued_messages(settings: Settings) -> list[dict[str, object]]:
    """Take every message off the job queue; returns their headers."""
    headers = []
    with connect(settings) as connection:
        queue = job_queue()(connection.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            headers.append(dict(message.headers))
    return headers


def test_submit_prints_the_job_id_of_a_task_message_on_the_job_queue(settings: Settings) -> None:
    done = kling_jobs(settings, "submit", "--s3", "s3://uploads/clips/a.mp4", "--job-id", "upl-1")

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["upl-1"]
    (headers,) = queued_messages(settings)
    assert headers["id"] == "upl-1"
    assert headers["task"] == TASK_NAME


def test_submit_file_enqueues_every_line(settings: Settings, tmp_path: Path) -> None:
    lines = [
        {"source": {"kind": "kling", "video_id": "v1", "task_id": "t1"}},
        {"job_id": "upl-2", "source": {"kind": "s3", "bucket": "uploads", "key": "b.mp4"}},
        {"source": {"kind": "url", "video_url": "https://cdn.example.com/c.mp4"},
         "metadata": {"upload_id": 3}},
    ]  # fmt: skip
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    done = kling_jobs(settings, "submit", "--file", str(jobs_file))

    assert done.returncode == 0, done.stderr
    printed = done.stdout.split()
    assert len(printed) == 3
    assert printed[1] == "upl-2"
    assert [headers["id"] for headers in queued_messages(settings)] == printed


def test_submit_file_with_a_bad_line_enqueues_nothing_and_names_the_line(
    settings: Settings,
) -> None:
    lines = [
        '{"source": {"kind": "kling", "video_id": "v1", "task_id": "t1"}}',
        '{"source": {"kind": "kling", "video_id": "v2"}}',
        "",
        "not json at all",
    ]

    done = kling_jobs(settings, "submit", "--file", "-", stdin="\n".join(lines))

    assert done.returncode == 2
    assert "line 2" in done.stderr
    assert "task_id" in done.stderr
    assert "line 4" in done.stderr
    reported = [line.split(":")[0] for line in done.stderr.splitlines()]
    assert reported == ["line 2", "line 4", "kling-jobs"]
    assert queued_messages(settings) == []


@pytest.mark.parametrize(
    "args",
    [
        ["submit"],
        ["submit", "--s3", "s3://b/k.mp4", "--url", "https://h/a.mp4"],
        ["submit", "--video-id", "v1"],
        ["submit", "--url", "http://insecure.example.com/a.mp4"],
        ["submit", "--s3", "s3://b/k.mp4", "--metadata", "[1, 2]"],
    ],
    ids=["no-source", "two-sources", "no-task-id", "plain-http", "metadata-not-object"],
)
def test_submit_refuses_a_job_that_breaks_the_contract(settings: Settings, args: list[str]) -> None:
    done = kling_jobs(settings, *args)

    assert done.returncode == 2
    assert done.stderr.startswith("kling-jobs: ")
    assert queued_messages(settings) == []


def test_results_prints_each_result_as_a_json_line(settings: Settings) -> None:
    publisher = ResultPublisher(connect(settings), pool_size=1)
    for job_id in ("r-1", "r-2", "r-3"):
        error = SourceNotFound("s3://uploads/missing.mp4 cannot be read: 404")
        publisher.publish(
            failed(job_id, error.to_result_error(), source=None, metadata={}, attempts=1,
                   submitted_at=None)
        )  # fmt: skip
    publisher.close()

    done = kling_jobs(settings, "results", "--max", "2")

    assert done.returncode == 0, done.stderr
    printed = [Result.model_validate_json(line) for line in done.stdout.splitlines()]
    assert [result.job_id for result in printed] == ["r-1", "r-2"]
    rest = kling_jobs(settings, "results")
    assert [json.loads(line)["job_id"] for line in rest.stdout.splitlines()] == ["r-3"]


def test_help_explains_every_command() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*KLING_JOBS, "submit", "--help"], env=env, capture_output=True, text=True, check=True
    )
    for option in ("--video-id", "--task-id", "--s3", "--url", "--file", "--job-id", "--metadata"):
        assert option in done.stdout
