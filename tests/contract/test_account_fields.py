"""The contract's account fields: ``account`` on a job, ``account`` and ``billing`` on a result."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from contract.errors import InvalidJobError
from contract.jobs import KlingVideo, S3Object, make_job, parse_job
from contract.results import Billing, Result, VideoFacts
from worker.pipeline import succeeded
from worker.upstream.answers import OpenedSession

#: The result example of docs/contract.md, "A result", in its key order.
CONTRACT_KEY_ORDER = [
    "job_id",
    "status",
    "session_id",
    "session_expires_at",
    "source",
    "metadata",
    "video",
    "kling_request_id",
    "account",
    "billing",
    "error",
    "attempts",
    "submitted_at",
    "completed_at",
]
SOURCE = S3Object(bucket="uploads", key="clips/a.mp4")


def test_a_job_may_name_its_account() -> None:
    job = make_job(SOURCE, account="main.backup_2-eu")
    assert job.account == "main.backup_2-eu"
    assert job.to_wire()["account"] == "main.backup_2-eu"
    assert parse_job(job.to_wire()) == job


def test_a_job_without_an_account_sends_none_so_older_workers_accept_it() -> None:
    wire = make_job(SOURCE).to_wire()
    assert "account" not in wire
    assert parse_job(wire).account is None


@pytest.mark.parametrize("name", ["", "a" * 65, "main account", "main/eu", "ünï", "main:eu"])
def test_a_bad_account_name_is_an_invalid_job(name: str) -> None:
    with pytest.raises(InvalidJobError, match="account"):
        make_job(SOURCE, account=name)


def test_an_account_must_be_a_string() -> None:
    wire = {**make_job(SOURCE).to_wire(), "account": 7}
    with pytest.raises(InvalidJobError, match="account"):
        parse_job(wire)


def test_a_result_names_its_account_and_billing_in_the_contract_key_order() -> None:
    job = make_job(KlingVideo(video_id="v", task_id="t"), account="main")
    opened = OpenedSession(
        session_id="s-1",
        request_id="req-1",
        video=VideoFacts(),
        billing=Billing(units=1.0, quota=None, list_price=0.14),
    )
    wire = succeeded(job, opened, attempts=1, received_at=None, account="main").to_wire()

    assert list(wire) == CONTRACT_KEY_ORDER
    assert wire["account"] == "main"
    assert wire["billing"] == {"units": 1.0, "quota": None, "list_price": 0.14}


def test_an_outcome_recorded_before_accounts_existed_still_parses() -> None:
    old = {
        "job_id": "j-1",
        "status": "succeeded",
        "session_id": "s-1",
        "session_expires_at": "2026-11-25T10:00:03Z",
        "source": {"kind": "kling", "video_id": "v", "task_id": "t"},
        "metadata": {},
        "video": None,
        "kling_request_id": None,
        "error": None,
        "attempts": 1,
        "submitted_at": None,
        "completed_at": "2026-11-24T10:00:03Z",
    }
    result = Result.model_validate_json(json.dumps(old))
    assert result.account is None
    assert result.billing is None
    assert result.completed_at == datetime(2026, 11, 24, 10, 0, 3, tzinfo=UTC)


def test_results_stay_frozen() -> None:
    billing = Billing(units=2.0)
    with pytest.raises(ValueError, match="frozen"):
        billing.units = 3.0  # type: ignore[misc]
