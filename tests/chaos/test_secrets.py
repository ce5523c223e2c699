"""Distinctive fake secrets never leave the worker: not in Flower's view of the task messages,
its log, results or dead letters."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.testing import RunningSimulator
from tests.chaos.scenarios import SIGNATURE_VALUE, secrets_session
from tests.chaos.secrets import CHAOS_API_KEY, CHAOS_AWS_SECRET, SUBMITTED_SIGNATURE
from tests.services import PUBLIC_BUCKET

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.slow]


def test_no_secret_or_signature_reaches_flower_logs_results_or_dead_letters(
    chaos_sim: RunningSimulator, workdir: Path, s3_endpoint: str, redis_url: str
) -> None:
    # Given a worker holding a fake API key and AWS secret, and jobs that presign an S3 object,
    # miss one, submit signed URLs (one the API cannot download), retry a server error, break
    # the contract with a signed URL, and a dead letter quoting a signed URL:
    run = secrets_session(
        chaos_sim, workdir, CHAOS_API_KEY, s3_endpoint=s3_endpoint, bucket=PUBLIC_BUCKET
    )
    texts = run.evidence["texts"]

    # The session did happen: every job has its result, and the API saw presigned URLs.
    assert not run.tally.missing(run.job_ids)
    assert run.tally.results["secret-s3"].status == "succeeded"
    assert max(result.attempts for result in run.tally.results.values()) == 2
    assert any("X-Amz-Signature=" in str(request["body"]) for request in run.evidence["requests"])
    assert "Job secret-s3 succeeded" in texts["worker log"]
    assert len(texts["task headers (Flower's argsrepr/kwargsrepr)"].splitlines()) == 7
    # Then no secret and no signature value is in anything an outsider reads.
    for where, text in texts.items():
        for secret in (CHAOS_API_KEY, CHAOS_AWS_SECRET, SUBMITTED_SIGNATURE):
            assert secret not in text, f"{secret} in {where}"
        assert not SIGNATURE_VALUE.findall(text), f"signature in {where}"
