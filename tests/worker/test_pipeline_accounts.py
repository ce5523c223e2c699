"""The pipeline on two accounts, against the simulator over HTTP: where each call goes, what a
paused account does to the others, and what a result says of its account and billing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from contract.jobs import Job, KlingVideo, VideoUrl, make_job
from contract.results import Billing, Result
from contract.settings import Settings
from simulator.samples import SAMPLE_CLIPS
from simulator.testing import RunningSimulator
from tests.services import PUBLIC_BUCKET
from worker.accounts import read_accounts_file
from worker.backoff import Backoff
from worker.coordination.store import Coordination
from worker.pipeline import Pipeline
from worker.runtime import account_pool
from worker.sources import SourceResolver

KEYS = {"main": "sk-main-pipeline-0001", "backup": "sk-backup-pipeline-0002"}
CAPS = {"main": 2, "backup": 3}
KLING = KlingVideo(video_id="kling-demo-video-1", task_id="kling-demo-task-1")
OPEN_S = 0.5


@pytest.fixture
def two_accounts(sim: RunningSimulator) -> RunningSimulator:
    """The simulator serving ``main`` and ``backup``, each with its own key."""
    for name, key in KEYS.items():
        sim.put_account(name, api_key=key)
    return sim


def pipeline(sim: RunningSimulator, tmp_path: Path, *, backoff_s: float = 0.01) -> Pipeline:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        "".join(
            f'[[accounts]]\nname = "{name}"\napi_key = "{KEYS[name]}"\n'
            f"max_concurrency = {CAPS[name]}\n\n"
            for name in ("main", "backup")
        )
    )
    settings = Settings(
        _env_file=None,
        kling_api_base_url=f"{sim.base_url}/kling",
        kling_accounts_file=accounts,
        kling_timeout_seconds=5.0,
        kling_circuit_open_seconds=OPEN_S,
        allow_http_video_urls=True,
        allow_private_video_hosts=True,
        worker_concurrency=16,
    )
    loaded = read_accounts_file(accounts, default_base_url=settings.kling_api_base_url)
    return Pipeline(
        resolver=SourceResolver.from_settings(settings),
        accounts=account_pool(loaded, Coordination.from_settings(settings), settings),
        backoff=Backoff(base_s=backoff_s, max_s=backoff_s),
        max_attempts=4,
    )


@pytest.fixture
def s3_url_clip(s3_endpoint: str) -> str:
    """A hosted clip (the public S3 bucket): any account may open a session on it."""
    return f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/{SAMPLE_CLIPS['valid_mp4'].filename}"


def run_many(runner: Pipeline, jobs: list[Job]) -> list[Result]:
    results: list[Result] = []
    lock = threading.Lock()

    def run(job: Job) -> None:
        result = runner.run(job).result
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def kling_jobs(n: int) -> list[Job]:
    """Kling clips pinned alternately to main and backup."""
    return [make_job(KLING, account=("main", "backup")[i % 2]) for i in range(n)]


def accounts_of(sim: RunningSimulator) -> dict[str, dict[str, object]]:
    accounts: dict[str, dict[str, object]] = sim.stats()["accounts"]
    return accounts


def test_unpinned_load_spreads_over_both_accounts_within_each_cap(
    two_accounts: RunningSimulator, tmp_path: Path, s3_url_clip: str
) -> None:
    two_accounts.set_faults(latency_ms=150)
    runner = pipeline(two_accounts, tmp_path)
    jobs = [make_job(VideoUrl(video_url=s3_url_clip), allow_http=True) for _ in range(20)]

    results = run_many(runner, jobs)

    assert [r.status for r in results] == ["succeeded"] * 20
    seen = accounts_of(two_accounts)
    for name, cap in CAPS.items():
        assert 0 < int(seen[name]["peak_in_flight"]) <= cap  # type: ignore[call-overload]
    assert sum(int(seen[n]["sessions_opened"]) for n in CAPS) == 20  # type: ignore[call-overload]
    assert {r.account for r in results} == {"main", "backup"}
    assert seen["default"]["calls"] == 0


def test_a_pinned_job_goes_to_its_account_and_an_unpinned_kling_job_to_the_first(
    two_accounts: RunningSimulator, tmp_path: Path
) -> None:
    runner = pipeline(two_accounts, tmp_path)

    pinned = [runner.run(job).result for job in kling_jobs(4)]
    unpinned = runner.run(make_job(KLING)).result

    assert [r.account for r in pinned] == ["main", "backup", "main", "backup"]
    assert unpinned.account == "main"
    seen = accounts_of(two_accounts)
    assert (seen["main"]["sessions_opened"], seen["backup"]["sessions_opened"]) == (3, 2)


def test_an_unknown_account_is_an_invalid_job_without_a_call(
    two_accounts: RunningSimulator, tmp_path: Path
) -> None:
    ran = pipeline(two_accounts, tmp_path).run(make_job(KLING, account="elsewhere"))

    assert ran.result.error is not None
    assert ran.result.error.type == "invalid_job"
    assert "'elsewhere' is not one of this fleet's accounts (main, backup)" in (
        ran.result.error.message
    )
    assert (ran.result.attempts, ran.result.account, ran.upstream_s) == (0, None, None)
    assert two_accounts.stats()["calls"] == 0


def test_a_spent_pack_pauses_its_account_and_unpinned_jobs_go_on_elsewhere(
    two_accounts: RunningSimulator, tmp_path: Path, s3_url_clip: str
) -> None:
    # backup has the most free capacity, so the first job goes there.
    two_accounts.update_account("backup", balance_units=0)
    runner = pipeline(two_accounts, tmp_path)
    url = VideoUrl(video_url=s3_url_clip)

    first = runner.run(make_job(url, allow_http=True)).result
    rest = [runner.run(make_job(url, allow_http=True)).result for _ in range(5)]
    pinned = runner.run(make_job(url, account="backup", allow_http=True))

    # The first job met the spent pack on backup, and was opened on main at once.
    assert (first.status, first.account, first.attempts) == ("succeeded", "main", 2)
    assert all((r.status, r.account, r.attempts) == ("succeeded", "main", 1) for r in rest)
    assert pinned.result.error is not None
    assert pinned.result.error.type == "account_blocked"
    assert "calls on account 'backup' paused" in pinned.result.error.message
    assert (pinned.result.account, pinned.upstream_s) == (None, None)
    assert accounts_of(two_accounts)["backup"]["by_code"] == {"1102": 1}


def test_a_paused_account_is_probed_by_one_call_after_its_pause(
    two_accounts: RunningSimulator, tmp_path: Path, s3_url_clip: str
) -> None:
    two_accounts.update_account("backup", balance_units=0)
    runner = pipeline(two_accounts, tmp_path)
    url = VideoUrl(video_url=s3_url_clip)
    runner.run(make_job(url, allow_http=True))
    threading.Event().wait(OPEN_S + 0.1)

    # Still spent: many jobs at once, but backup sees one probe call.
    results = run_many(runner, [make_job(url, allow_http=True) for _ in range(8)])
    assert [r.status for r in results] == ["succeeded"] * 8
    assert {r.account for r in results} == {"main"}
    assert accounts_of(two_accounts)["backup"]["by_code"] == {"1102": 2}

    # Refilled: after the next pause the probe passes and backup takes jobs again.
    two_accounts.update_account("backup", balance_units=100)
    threading.Event().wait(OPEN_S + 0.1)
    results = run_many(runner, [make_job(url, allow_http=True) for _ in range(8)])
    assert [r.status for r in results] == ["succeeded"] * 8
    assert "backup" in {r.account for r in results}


def test_when_every_account_is_paused_jobs_fail_without_a_call(
    two_accounts: RunningSimulator, tmp_path: Path
) -> None:
    for name in KEYS:
        two_accounts.update_account(name, balance_units=0)
    runner = pipeline(two_accounts, tmp_path)
    url = VideoUrl(video_url=f"{two_accounts.base_url}/none.mp4")

    first = runner.run(make_job(url, allow_http=True)).result
    calls = two_accounts.stats()["calls"]
    later = runner.run(make_job(url, allow_http=True))

    assert first.error is not None
    # Tried on backup (most free capacity), then on main: the last call names the account.
    assert (first.error.type, first.account, first.attempts) == ("account_blocked", "main", 2)
    assert later.result.error is not None
    assert later.result.error.type == "account_blocked"
    assert later.result.error.message.startswith("every account is paused: calls on account")
    assert later.upstream_s is None
    assert two_accounts.stats()["calls"] == calls == 2


@pytest.mark.parametrize("billing_format", ["number", "string"])
def test_billing_is_read_from_numbers_and_strings(
    two_accounts: RunningSimulator, tmp_path: Path, billing_format: str
) -> None:
    two_accounts.update_account("main", billing_format=billing_format)

    result = pipeline(two_accounts, tmp_path).run(make_job(KLING)).result

    assert result.billing == Billing(units=1.0, quota=1.0, list_price=0.14)
    assert accounts_of(two_accounts)["main"]["units_billed"] == 1.0
