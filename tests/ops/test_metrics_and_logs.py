"""The worker's Prometheus exporter and its JSON log lines, read from a real worker process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from devstack.processes import ROOT, process_env
from tests.ops.conftest import OpsRun, Samples
from tests.services import API_KEY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

#: Every metric docs/operations.md documents, as the exporter names its samples.
DOCUMENTED_SAMPLES = (
    "kling_jobs_total",
    "kling_upstream_request_duration_seconds_bucket",
    "kling_upstream_in_flight",
    "kling_job_retries_total",
    "kling_limiter_wait_seconds_count",
    "kling_result_publish_failures_total",
    "kling_account_calls_total",
    "kling_account_in_flight",
    "kling_account_paused",
    "kling_account_billed_units_total",
)
#: Fields of the one outcome line per job.
OUTCOME_FIELDS = {
    "ts",
    "level",
    "logger",
    "message",
    "event",
    "job_id",
    "source_kind",
    "status",
    "error_type",
    "attempts",
    "upstream_latency_ms",
    "account",
    "billed_units",
    "kling_request_id",
    "republished",
}


def delta(run: OpsRun, name: str, **labels: str) -> float:
    """How much the sample ``name{labels}`` moved during the run."""
    key = (name, tuple(sorted(labels.items())))
    return run.metrics_after.get(key, 0.0) - run.metrics_before.get(key, 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def test_the_exporter_serves_every_documented_metric(ops_run: OpsRun) -> None:
    names = {name for name, _ in ops_run.metrics_after}

    assert set(DOCUMENTED_SAMPLES) <= names, set(DOCUMENTED_SAMPLES) - names


def test_jobs_are_counted_by_status_and_error_type(ops_run: OpsRun) -> None:
    expected = Counter(
        (result.status, result.error.type if result.error else "")
        for result in ops_run.results.values()
    )

    assert ops_run.results["s3"].status == "succeeded"
    assert ops_run.results["kling"].status == "succeeded"
    assert expected[("failed", "source_not_found")] == 1
    for (status, error_type), count in expected.items():
        assert delta(ops_run, "kling_jobs_total", status=status, error_type=error_type) == count
    assert total(ops_run.metrics_after, "kling_jobs_total") - total(
        ops_run.metrics_before, "kling_jobs_total"
    ) == len(ops_run.results)


def test_upstream_calls_retries_and_in_flight_are_measured(ops_run: OpsRun) -> None:
    # The simulator answered the first call with 5000 (a server error): one retry.
    assert delta(ops_run, "kling_job_retries_total", reason="upstream_down") == 1
    calls = sum(
        result.attempts for result in ops_run.results.values() if result.error is None
    ) + sum(
        result.attempts
        for result in ops_run.results.values()
        if result.error is not None and result.error.type != "source_not_found"
    )
    count = "kling_upstream_request_duration_seconds_count"
    assert delta(ops_run, count, outcome="upstream_down") == 1
    assert total(ops_run.metrics_after, count) - total(ops_run.metrics_before, count) == calls
    assert delta(ops_run, "kling_upstream_request_duration_seconds_sum", outcome="ok") > 0
    # Every call has returned: nothing is in flight any more.
    assert ops_run.metrics_after[("kling_upstream_in_flight", ())] == 0
    assert delta(ops_run, "kling_result_publish_failures_total") == 0


def outcome_lines(run: OpsRun) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in run.worker.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "job_outcome"]


def test_each_job_has_one_json_outcome_line_with_every_field(ops_run: OpsRun) -> None:
    lines = {line["job_id"]: line for line in outcome_lines(ops_run)}
    counted = Counter(line["job_id"] for line in outcome_lines(ops_run))

    for name, job_id in ops_run.job_ids.items():
        assert counted[job_id] == 1, name
        line, result = lines[job_id], ops_run.results[name]
        assert set(line) == OUTCOME_FIELDS
        assert line["status"] == result.status
        assert line["error_type"] == (result.error.type if result.error else None)
        assert line["attempts"] == result.attempts
        assert line["kling_request_id"] == result.kling_request_id
        assert line["account"] == result.account
    assert lines[ops_run.job_ids["s3"]]["source_kind"] == "s3"
    assert lines[ops_run.job_ids["kling"]]["source_kind"] == "kling"
    assert lines[ops_run.job_ids["signed_url"]]["source_kind"] == "url"
    assert lines[ops_run.job_ids["s3"]]["upstream_latency_ms"] > 0
    # One account, "default", without an accounts file: it made every call and billed it.
    assert lines[ops_run.job_ids["s3"]]["account"] == "default"
    assert lines[ops_run.job_ids["s3"]]["billed_units"] == 1.0
    # A missing S3 object fails before any call to the API.
    assert lines[ops_run.job_ids["missing"]]["upstream_latency_ms"] is None
    assert lines[ops_run.job_ids["missing"]]["account"] is None


def test_at_info_a_job_is_one_line_not_celerys_received_and_succeeded_too(
    ops_run: OpsRun,
) -> None:
    records = [
        json.loads(line) for line in ops_run.worker.log().splitlines() if line.startswith("{")
    ]
    for name, job_id in ops_run.job_ids.items():
        about_it = [r for r in records if r["level"] == "INFO" and job_id in json.dumps(r)]
        assert [r.get("event") for r in about_it] == ["job_outcome"], name


def test_every_log_record_is_a_json_line_without_a_secret(ops_run: OpsRun) -> None:
    log = ops_run.worker.log()

    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(records) > len(ops_run.job_ids)
    # Nothing was logged in Celery's own text format ("[2026-... INFO/MainProcess] ...").
    assert "/MainProcess]" not in log
    for secret in (API_KEY, "local-demo-secret-key", "deadbeef0123456789", "AKIAOPSTEST"):
        assert secret not in log
    assert "X-Amz-Signature=" not in log.replace("X-Amz-Signature=REDACTED", "")


def test_the_health_check_passes_for_a_live_worker_and_fails_for_another(
    ops_run: OpsRun,
) -> None:
    port = ops_run.metrics_url.removesuffix("/metrics").rsplit(":", 1)[1]
    env = process_env(ops_run.settings.broker_url, METRICS_PORT=port)
    health = [sys.executable, "-m", "worker.ops.healthcheck", "--timeout", "3"]

    # A ping can be lost while the broker is busy: an orchestrator retries, so does the test.
    for _ in range(3):
        alive = subprocess.run(
            [*health, "--node", ops_run.worker_node, "--metrics"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if alive.returncode == 0:
            break
    gone = subprocess.run(
        [*health, "--node", "nobody@nowhere"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert alive.returncode == 0, alive.stderr
    assert gone.returncode == 1
    assert "did not answer" in gone.stderr
