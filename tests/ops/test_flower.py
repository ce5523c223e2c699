"""Flower against a real worker: what operators see of the jobs, and that no secret is there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from contract.names import TASK_NAME
from contract.topology import connect, job_queue
from devstack.processes import ROOT, free_port, process_env, running, wait_for_http
from producers import Producer, S3Object
from tests.ops.conftest import OpsRun, celery_state, collect_results
from tests.ops.processes import FLOWER_PASSWORD, FLOWER_USER, flower_command
from tests.services import API_KEY, SAMPLES_BUCKET

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

#: Values that must never reach Flower: the API key, the S3 secret, a signature, a credential.
SECRETS = (API_KEY, "local-demo-secret-key", "deadbeef0123456789", "AKIAOPSTEST")
#: Set to 1 to refresh docs/flower-tasks.png from the screenshot test.
UPDATE_SCREENSHOT_ENV = "KLING_UPDATE_FLOWER_SCREENSHOT"
AUTH = (FLOWER_USER, FLOWER_PASSWORD)


def test_flower_lists_every_job_as_a_finished_kling_task(ops_run: OpsRun) -> None:
    tasks = ops_run.flower_api("/api/tasks").json()

    for name, job_id in ops_run.job_ids.items():
        task = tasks[job_id]
        assert task["name"] == TASK_NAME
        assert task["state"] == celery_state(ops_run.results[name])
        if task["state"] == "SUCCESS":
            assert task["runtime"] > 0
        else:  # a task-failed event carries no runtime, only when it failed
            assert task["failed"] >= task["started"] > 0
        assert task["worker"] == ops_run.worker_node
        # Retries happen inside the run (kling_job_retries_total), not as Celery retries.
        assert task["retries"] == 0


def test_a_failed_job_is_a_failure_in_flower_with_its_error_type(ops_run: OpsRun) -> None:
    failed = {
        ops_run.job_ids[name]: result.error.type
        for name, result in ops_run.results.items()
        if result.error is not None
    }
    assert list(failed.values()) == ["source_not_found"]

    # Flower's Failed filter is this query: it finds the failed job and nothing else.
    listed = ops_run.flower_api("/api/tasks?state=FAILURE").json()
    assert set(listed) == set(failed)
    for job_id, error_type in failed.items():
        info = ops_run.flower_api(f"/api/task/info/{job_id}").json()
        assert info["state"] == "FAILURE"
        assert info["exception"] == f"JobEndedFailed('{error_type}')"
        assert info["retries"] == 0
        # An expected exception: one INFO line, the job's outcome, and no traceback.
        lines = [line for line in ops_run.worker.log().splitlines() if job_id in line]
        assert len(lines) == 1, lines
        outcome = json.loads(lines[0])
        assert (outcome["event"], outcome["status"]) == ("job_outcome", "failed")
        assert outcome["error_type"] == error_type
    assert "Traceback" not in ops_run.worker.log()
    # Published once (the run collected exactly one result each) and acked: nothing is left.
    assert job_queue_depth(ops_run) == 0


def job_queue_depth(run: OpsRun) -> int:
    with connect(run.settings) as connection:
        declared = job_queue()(connection.default_channel).queue_declare(passive=True)
        return int(declared.message_count)


def test_flower_shows_the_job_in_the_task_arguments(ops_run: OpsRun) -> None:
    info = ops_run.flower_api(f"/api/task/info/{ops_run.job_ids['s3']}").json()

    assert info["args"] == "()"
    assert '"bucket": "uploads"' in info["kwargs"]
    assert '"metadata": {"case": "s3"}' in info["kwargs"]
    assert f'"job_id": "{ops_run.job_ids["s3"]}"' in info["kwargs"]
    # The worker presigns the object: the URL it sends the API is nowhere in Flower.
    assert "X-Amz-Signature" not in info["kwargs"]


def test_a_signed_url_job_shows_in_flower_without_its_signature(ops_run: OpsRun) -> None:
    info = ops_run.flower_api(f"/api/task/info/{ops_run.job_ids['signed_url']}").json()

    assert "X-Amz-Signature=REDACTED" in info["kwargs"]
    assert "X-Amz-Credential=REDACTED" in info["kwargs"]
    assert "deadbeef" not in info["kwargs"]


def test_nothing_flower_holds_contains_a_secret(ops_run: OpsRun) -> None:
    every_task = ops_run.flower_api("/api/tasks").text
    details = [
        ops_run.flower_api(f"/api/task/info/{job_id}").text for job_id in ops_run.job_ids.values()
    ]

    for text in [every_task, *details]:
        for secret in SECRETS:
            assert secret not in text


def test_flower_api_needs_the_basic_auth_credentials(ops_run: OpsRun) -> None:
    assert requests.get(f"{ops_run.flower_url}/api/tasks", timeout=10).status_code == 401
    wrong = requests.get(f"{ops_run.flower_url}/api/tasks", auth=("x", "y"), timeout=10)
    assert wrong.status_code == 401
    # The health check stays open for probes (and /metrics for Prometheus).
    assert requests.get(f"{ops_run.flower_url}/healthcheck", timeout=10).text == "OK"


def test_flower_tasks_page_renders_in_headless_chromium(ops_run: OpsRun, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    shot = tmp_path / "flower-tasks.png"
    # Credentials in the address: Chromium keeps them for the page's own XHR calls.
    address = ops_run.flower_url.replace("http://", f"http://{FLOWER_USER}:{FLOWER_PASSWORD}@")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", "--window-size=1800,560", "--virtual-time-budget=8000",
    ]  # fmt: skip
    profile = f"--user-data-dir={tmp_path / 'chromium'}"
    subprocess.run(
        [browser, *flags, profile, f"--screenshot={shot}", f"{address}/tasks"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered table, not a blank or an error page
    if os.environ.get(UPDATE_SCREENSHOT_ENV) == "1":
        shutil.copyfile(shot, ROOT / "docs" / "flower-tasks.png")


def test_flower_keeps_its_task_history_across_a_restart(ops_run: OpsRun, tmp_path: Path) -> None:
    # Given a Flower of its own that has seen one job's task end
    port, db = free_port(), tmp_path / "flower.db"
    env = process_env(
        ops_run.settings.broker_url, FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}"
    )
    url = f"http://127.0.0.1:{port}"
    online = f'flower_worker_online{{worker="{ops_run.worker_node}"}} 1'
    with running("flower-a", flower_command(port, db), env, tmp_path) as flower:
        wait_for_http(flower, f"{url}/metrics", online)
        with Producer(ops_run.settings) as producer:
            job_id = producer.submit(S3Object(bucket=SAMPLES_BUCKET, key="clips/missing.mp4"))
        collect_results(ops_run.settings, {job_id})
        wait_for_task(url, job_id)

    # When it is stopped and a new Flower starts on the same database
    assert list(tmp_path.glob("flower.db*"))
    with running("flower-b", flower_command(port, db), env, tmp_path) as flower:
        wait_for_http(flower, f"{url}/healthcheck", "OK")
        tasks = requests.get(f"{url}/api/tasks", auth=AUTH, timeout=10).json()

    # Then the task is still listed, finished (a missing object: a failed job)
    assert tasks[job_id]["name"] == TASK_NAME
    assert tasks[job_id]["state"] == "FAILURE"


def wait_for_task(flower_url: str, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = requests.get(f"{flower_url}/api/tasks", auth=AUTH, timeout=10).json()
        if tasks.get(job_id, {}).get("state") in ("SUCCESS", "FAILURE"):
            return
        time.sleep(0.3)
    pytest.fail(f"Flower never saw {job_id} end")


def test_flower_config_names_only_real_flower_options() -> None:
    # Tornado ignores an unknown name in the file silently: a typo would go unnoticed.
    from flower.options import options  # type: ignore[import-untyped]

    config: dict[str, object] = {}
    exec((ROOT / "config" / "flowerconfig.py").read_text(), config)  # noqa: S102
    names = {name for name in config if not name.startswith("_") and name != "SecretScrubber"}
    known = {name.replace("-", "_") for name in options._options}
    assert names <= known, names - known
    assert {"persistent", "db", "format_task"} <= names
