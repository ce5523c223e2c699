"""Two Kling accounts, one fleet of real worker processes: per-account caps hold fleet-wide,
load spreads, pins are kept, a spent pack pauses one account while the other carries on,
billing is read in both forms, and no key reaches logs, results, metrics or Flower."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from os import EX_CONFIG
from pathlib import Path

import pytest

from contract.results import Billing
from devstack.processes import process_env, worker_command
from tests.integration.accounts_fleet import (
    ACCOUNTS_FILE,
    BACKUP_UNITS,
    CAPS,
    SECRETS,
    FleetRun,
    fleet_run,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(
    rabbitmq_url: str, redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetRun]:
    yield from fleet_run(tmp_path_factory.mktemp("accounts-fleet"), rabbitmq_url, s3_endpoint)


def test_unpinned_load_spreads_over_both_accounts_each_within_its_own_cap(run: FleetRun) -> None:
    spread = run.phases["spread"]

    assert {r.status for r in spread.results.values()} == {"succeeded"}
    by_account = {name: 0 for name in CAPS}
    for result in spread.results.values():
        assert result.account is not None
        by_account[result.account] += 1
    assert all(count > 0 for count in by_account.values()), by_account
    for name, cap in CAPS.items():
        # The simulator's count of calls in flight on the account, from both workers.
        assert 0 < spread.accounts_after[name]["peak_in_flight"] <= cap
        assert spread.delta(name, "sessions_opened") == by_account[name]


def test_billing_is_read_from_numbers_on_one_account_and_strings_on_the_other(
    run: FleetRun,
) -> None:
    # main answers with numbers, backup with strings: both read as the same numbers.
    for result in run.phases["spread"].results.values():
        assert result.billing == Billing(units=1.0, quota=1.0, list_price=0.14)


def test_pinned_jobs_go_to_their_account_and_an_unpinned_kling_job_to_the_first(
    run: FleetRun,
) -> None:
    pinned = run.phases["pinned"]

    for name, result in pinned.results.items():
        assert result.status == "succeeded", result.error
        expected = "main" if name == "kling-unpinned" else name.split("-")[0]
        assert result.account == expected, name
    assert pinned.delta("main", "sessions_opened") == 4
    assert pinned.delta("backup", "sessions_opened") == 3


def test_when_one_pack_runs_out_mid_run_every_unpinned_job_succeeds_on_the_other(
    run: FleetRun,
) -> None:
    pack = run.phases["pack"]

    assert {r.status for r in pack.results.values()} == {"succeeded"}
    assert pack.delta("backup", "sessions_opened") == BACKUP_UNITS
    assert pack.accounts_after["backup"]["balance_units"] == 0
    refused = pack.accounts_after["backup"]["by_code"].get("1102", 0)
    assert refused >= 1
    # Each refusal sent its job on to main at once: one more attempt, no more.
    moved = [r for r in pack.results.values() if r.attempts == 2]
    assert len(moved) == refused
    assert all(r.account == "main" for r in moved)
    assert pack.delta("main", "sessions_opened") == 40 - BACKUP_UNITS


def test_a_job_pinned_to_the_paused_account_fails_without_a_call(run: FleetRun) -> None:
    after = run.phases["after"]
    paused = after.results["pinned-paused"]

    assert paused.error is not None
    assert paused.error.type == "account_blocked"
    assert "calls on account 'backup' paused" in paused.error.message
    assert paused.account is None
    assert after.delta("backup", "calls") == 0


def test_an_unknown_account_is_an_invalid_job_without_a_call(run: FleetRun) -> None:
    unknown = run.phases["after"].results["unknown"]

    assert unknown.error is not None
    assert unknown.error.type == "invalid_job"
    assert "'elsewhere' is not one of this fleet's accounts (main, backup)" in unknown.error.message
    assert (unknown.account, unknown.attempts) == (None, 0)


def test_metrics_count_calls_units_and_pauses_by_account(run: FleetRun) -> None:
    def total(name: str, **labels: str) -> float:
        return sum(
            value
            for samples in run.metrics
            for (metric, metric_labels), value in samples.items()
            if metric == name and all(dict(metric_labels).get(k) == v for k, v in labels.items())
        )

    for account in CAPS:
        billed = run.phases["after"].accounts_after[account]["units_billed"]
        assert total("kling_account_billed_units_total", account=account) == billed
        calls = run.phases["after"].accounts_after[account]["calls"]
        assert total("kling_account_calls_total", account=account) == calls
        assert total("kling_account_in_flight", account=account) == 0
    assert total("kling_account_calls_total", account="backup", outcome="account_blocked") >= 1
    # backup is paused on both workers (the breaker lives in Redis), main on neither.
    assert total("kling_account_paused", account="backup") == 2
    assert total("kling_account_paused", account="main") == 0


def test_each_outcome_log_line_names_the_account(run: FleetRun) -> None:
    lines = [json.loads(line) for line in run.logs().splitlines() if '"job_outcome"' in line]
    by_job = {line["job_id"]: line for line in lines}

    for phase in run.phases.values():
        for result in phase.results.values():
            assert by_job[result.job_id]["account"] == result.account
    assert any(line["billed_units"] == 1.0 for line in lines)


def test_no_account_secret_reaches_logs_results_metrics_or_flower(run: FleetRun) -> None:
    job_ids = [r.job_id for phase in run.phases.values() for r in phase.results.values()]
    texts = {
        "worker logs": run.logs(),
        "results": "\n".join(
            r.to_json() for phase in run.phases.values() for r in phase.results.values()
        ),
        "metrics": "\n".join(repr(samples) for samples in run.metrics),
        "flower tasks": run.flower("/api/tasks"),
        "flower task details": "\n".join(
            run.flower(f"/api/task/info/{job_id}") for job_id in job_ids
        ),
    }
    assert "Job " in texts["worker logs"]
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret} in {where}"


def test_a_bad_accounts_file_stops_the_worker_at_start_without_showing_a_secret(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(ACCOUNTS_FILE.replace('name = "backup"', 'name = "main"'))
    env = process_env(rabbitmq_url, KLING_ACCOUNTS_FILE=str(accounts), METRICS_PORT="0")

    done = subprocess.run(
        worker_command("bad-accounts@localhost", 1),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == EX_CONFIG
    output = done.stdout + done.stderr
    assert "The worker cannot start" in output
    assert "account 'main' is listed twice (lines 1 and 6)" in output
    for secret in SECRETS:
        assert secret not in output
