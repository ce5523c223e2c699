"""The result message of CONTRACT.md ("A result") and keeping secrets out of it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from contract.jobs import KlingVideo, S3Object, VideoUrl, parse_job
from contract.redaction import redact_raw_source, redact_source, redact_url
from contract.results import Result, VideoFacts
from worker.errors import UpstreamUnavailable, VideoRejected
from worker.ops.logs import SecretScrubber
from worker.pipeline import failed, invalid_job_result, succeeded
from worker.publisher import serializable
from worker.tasks import shown_kwargs
from worker.upstream.answers import OpenedSession

#: The keys of the result example in CONTRACT.md, written out from the page.
CONTRACT_RESULT_KEYS = {
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
}
CONTRACT_VIDEO_KEYS = {
    "fps",
    "duration_ms",
    "width",
    "height",
    "total_frames",
    "normalized_video_url",
}
CONTRACT_ERROR_KEYS = {"type", "message", "retryable", "api_code", "http_status"}

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

PRESIGNED = (
    "https://uploads.s3.eu-west-1.amazonaws.com/clips/a.mp4"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20261124%2Feu-west-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261124T100000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE"
    "&X-Amz-Signature=0123456789abcdef0123456789abcdef"
)
SECRET_VALUES = ("AKIAEXAMPLE", "FwoGZXIvYXdzEXAMPLE", "0123456789abcdef0123456789abcdef")


def s3_job_wire() -> dict[str, Any]:
    return {
        "job_id": "upl-20261124-000123",
        "source": {"kind": "s3", "bucket": "uploads", "key": "clips/a.mp4", "version_id": None},
        "metadata": {"upload_id": 42},
        "submitted_at": "2026-11-24T10:00:00Z",
    }


def opened_session() -> OpenedSession:
    return OpenedSession(
        session_id="8f1c-session",
        request_id="req-1",
        video=VideoFacts(
            fps=30.0,
            duration_ms=5000,
            width=1280,
            height=720,
            total_frames=150,
            normalized_video_url="https://cdn.example.com/n.mp4",
        ),
    )


def succeeded_result() -> Result:
    return succeeded(parse_job(s3_job_wire()), opened_session(), attempts=1, received_at=None)


def failed_result() -> Result:
    job = parse_job(s3_job_wire())
    return failed(
        job.job_id,
        VideoRejected("clip rejected", api_code=0, http_status=200).to_result_error(),
        source=job.source,
        metadata=job.metadata,
        attempts=1,
        submitted_at=job.submitted_at,
    )


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# Result shape ---------------------------------------------------------------------------------


def test_succeeded_result_has_exactly_the_contract_keys() -> None:
    wire = succeeded_result().to_wire()

    assert set(wire) == CONTRACT_RESULT_KEYS
    assert set(wire["video"]) == CONTRACT_VIDEO_KEYS


def test_failed_result_has_exactly_the_contract_keys() -> None:
    wire = failed_result().to_wire()

    assert set(wire) == CONTRACT_RESULT_KEYS
    assert set(wire["error"]) == CONTRACT_ERROR_KEYS


def test_succeeded_result_has_a_session_and_no_error() -> None:
    wire = succeeded_result().to_wire()

    assert wire["status"] == "succeeded"
    assert wire["session_id"] == "8f1c-session"
    assert wire["session_expires_at"] is not None
    assert wire["error"] is None
    assert wire["kling_request_id"] == "req-1"
    assert wire["video"] == {
        "fps": 30.0,
        "duration_ms": 5000,
        "width": 1280,
        "height": 720,
        "total_frames": 150,
        "normalized_video_url": "https://cdn.example.com/n.mp4",
    }


def test_succeeded_result_echoes_the_job() -> None:
    wire = succeeded_result().to_wire()

    assert wire["job_id"] == "upl-20261124-000123"
    assert wire["source"] == s3_job_wire()["source"]
    assert wire["metadata"] == {"upload_id": 42}
    assert wire["submitted_at"] == "2026-11-24T10:00:00Z"
    assert wire["attempts"] == 1


def test_session_expires_24_hours_after_completion() -> None:
    result = succeeded_result()

    assert result.session_expires_at is not None
    assert result.session_expires_at - result.completed_at == timedelta(hours=24)


def test_failed_result_has_an_error_and_no_session_or_video() -> None:
    wire = failed_result().to_wire()

    assert wire["status"] == "failed"
    assert wire["session_id"] is None
    assert wire["session_expires_at"] is None
    assert wire["video"] is None
    assert wire["error"] == {
        "type": "video_rejected",
        "message": "clip rejected",
        "retryable": False,
        "api_code": 0,
        "http_status": 200,
    }


def test_upstream_unavailable_error_is_marked_retryable_in_the_result() -> None:
    error = UpstreamUnavailable("still failing", http_status=503).to_result_error()

    assert error.model_dump() == {
        "type": "upstream_unavailable",
        "message": "still failing",
        "retryable": True,
        "api_code": None,
        "http_status": 503,
    }


@pytest.mark.parametrize("make", [succeeded_result, failed_result], ids=["succeeded", "failed"])
def test_result_timestamps_are_rfc3339_in_utc_with_z(make: Callable[[], Result]) -> None:
    wire = make().to_wire()

    stamps = [wire["submitted_at"], wire["completed_at"]]
    if wire["session_expires_at"] is not None:
        stamps.append(wire["session_expires_at"])
    for stamp in stamps:
        assert RFC3339_UTC.match(stamp), stamp


def test_completed_at_is_now() -> None:
    before = datetime.now(UTC)
    result = succeeded_result()
    after = datetime.now(UTC)

    assert before <= result.completed_at <= after


def test_result_json_is_compact_and_decodes_to_the_wire_form() -> None:
    result = succeeded_result()

    text = result.to_json()

    assert json.loads(text) == result.to_wire()
    assert ", " not in text
    assert ": " not in text


def test_result_wire_form_parses_back_into_an_equal_result() -> None:
    result = failed_result()

    assert Result.model_validate(result.to_wire()) == result


def test_succeeded_result_never_carries_a_presigned_url() -> None:
    job = parse_job({"job_id": "j-1", "source": {"kind": "url", "video_url": PRESIGNED}})

    text = succeeded(job, opened_session(), attempts=1, received_at=None).to_json()

    for secret in SECRET_VALUES:
        assert secret not in text
    assert "uploads.s3.eu-west-1.amazonaws.com/clips/a.mp4" in text


def test_submitted_at_falls_back_to_when_the_worker_received_the_job() -> None:
    job = parse_job({"job_id": "j-1", "source": {"kind": "kling", "video_id": "v", "task_id": "t"}})
    received = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    result = succeeded(job, opened_session(), attempts=2, received_at=received)

    assert result.submitted_at == received
    assert result.attempts == 2


# invalid_job_result ---------------------------------------------------------------------------


def test_invalid_job_result_is_a_failed_invalid_job_with_no_attempts() -> None:
    received = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

    result = invalid_job_result("j-1", {"source": {}}, "source: bad", received_at=received)

    wire = result.to_wire()
    assert set(wire) == CONTRACT_RESULT_KEYS
    assert wire["status"] == "failed"
    assert wire["attempts"] == 0
    assert wire["error"]["type"] == "invalid_job"
    assert wire["error"]["retryable"] is False
    assert wire["error"]["message"] == "source: bad"
    assert wire["submitted_at"] == "2026-11-24T10:00:00Z"


def test_invalid_job_result_echoes_the_raw_source_with_urls_redacted() -> None:
    raw = {
        "job_id": "j-1",
        "source": {"kind": "kling", "video_id": "v", "video_url": PRESIGNED},
        "metadata": {"upload_id": 7},
    }

    result = invalid_job_result("j-1", raw, "both inputs", received_at=datetime.now(UTC))

    assert isinstance(result.source, dict)
    assert result.source["kind"] == "kling"
    assert result.source["video_id"] == "v"
    for secret in SECRET_VALUES:
        assert secret not in result.to_json()
    assert result.metadata == {"upload_id": 7}


def test_invalid_job_result_drops_metadata_that_is_not_an_object() -> None:
    result = invalid_job_result(
        "j-1", {"metadata": [1, 2]}, "metadata: bad", received_at=datetime.now(UTC)
    )

    assert result.metadata == {}
    assert result.source is None


def test_invalid_job_result_drops_oversized_metadata() -> None:
    raw = {"metadata": {"k": "x" * 20_000}}

    result = invalid_job_result("j-1", raw, "metadata too big", received_at=datetime.now(UTC))

    assert result.metadata == {}


def test_invalid_job_result_keeps_metadata_that_fits_the_job_limit() -> None:
    metadata = {"k": "x" * (16 * 1024 - len('{"k":""}'))}
    parse_job(
        {
            "job_id": "j-1",
            "source": {"kind": "s3", "bucket": "b12", "key": "k"},
            "metadata": metadata,
        }
    )  # the job rule accepts it
    raw = {"job_id": "bad id", "metadata": metadata}

    result = invalid_job_result("bad-id", raw, "job_id: bad", received_at=datetime.now(UTC))

    assert result.metadata == metadata


def test_redact_raw_source_keeps_scalars_and_drops_nested_values() -> None:
    cleaned = redact_raw_source(
        {"kind": "url", "n": 3, "ok": True, "nothing": None, "nested": {"a": 1}, "list": [1]}
    )

    assert cleaned == {"kind": "url", "n": 3, "ok": True, "nothing": None}


# redact_url -----------------------------------------------------------------------------------


def test_presigned_s3_url_loses_signature_credential_and_token() -> None:
    redacted = redact_url(PRESIGNED)

    for secret in SECRET_VALUES:
        assert secret not in redacted
    params = dict(query(redacted))
    assert params["X-Amz-Signature"] != "0123456789abcdef0123456789abcdef"
    assert params["X-Amz-Credential"] != "AKIAEXAMPLE/20261124/eu-west-1/s3/aws4_request"
    assert params["X-Amz-Security-Token"] != "FwoGZXIvYXdzEXAMPLE"


def test_presigned_s3_url_keeps_its_other_parameters_and_their_order() -> None:
    redacted = redact_url(PRESIGNED)

    assert [name for name, _ in query(redacted)] == [name for name, _ in query(PRESIGNED)]
    params = dict(query(redacted))
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-Date"] == "20261124T100000Z"
    assert params["X-Amz-Expires"] == "3600"
    assert params["X-Amz-SignedHeaders"] == "host"


def test_redacted_url_keeps_scheme_host_and_path() -> None:
    parts = urlsplit(redact_url(PRESIGNED))

    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "uploads.s3.eu-west-1.amazonaws.com",
        "/clips/a.mp4",
    )


@pytest.mark.parametrize(
    "name",
    [
        "X-Amz-Signature",
        "x-amz-signature",
        "X-AMZ-SIGNATURE",
        "X-Amz-Credential",
        "x-amz-credential",
        "X-Amz-Security-Token",
        "x-amz-security-token",
        "Signature",
        "signature",
        "SIGNATURE",
    ],
)
def test_secret_parameter_is_redacted_whatever_its_case(name: str) -> None:
    url = f"https://cdn.example.com/a.mp4?a=1&{name}=topsecret&b=2"

    redacted = redact_url(url)

    assert "topsecret" not in redacted
    assert query(redacted)[0] == ("a", "1")
    assert query(redacted)[2] == ("b", "2")
    assert query(redacted)[1][0] == name


def test_every_repeat_of_a_secret_parameter_is_redacted() -> None:
    redacted = redact_url("https://cdn.example.com/a.mp4?Signature=one&Signature=two")

    assert "one" not in redacted
    assert "two" not in redacted


def test_url_without_query_is_returned_unchanged() -> None:
    url = "https://cdn.example.com/clips/a.mp4"

    assert redact_url(url) == url


def test_url_with_only_harmless_parameters_is_returned_unchanged() -> None:
    url = "https://cdn.example.com/clips/a.mp4?width=1280&v=2"

    assert redact_url(url) == url


def test_encoded_harmless_parameter_keeps_its_value() -> None:
    url = (
        "https://cdn.example.com/a.mp4?response-content-disposition="
        "attachment%3B%20filename%3D%22a.mp4%22&X-Amz-Signature=abc"
    )

    params = dict(query(redact_url(url)))

    assert params["response-content-disposition"] == 'attachment; filename="a.mp4"'


def test_parameter_merely_containing_signature_in_its_name_is_kept() -> None:
    url = "https://cdn.example.com/a.mp4?signature_version=4&X-Amz-Signature=abc"

    params = dict(query(redact_url(url)))

    assert params["signature_version"] == "4"


def test_fragment_survives_redaction() -> None:
    redacted = redact_url("https://cdn.example.com/a.mp4?Signature=abc#t=2")

    assert urlsplit(redacted).fragment == "t=2"


# redact_source --------------------------------------------------------------------------------


def test_redact_source_strips_the_signature_of_a_presigned_url_source() -> None:
    source = VideoUrl(video_url=PRESIGNED)

    redacted = redact_source(source)

    assert isinstance(redacted, VideoUrl)
    for secret in SECRET_VALUES:
        assert secret not in redacted.video_url
    assert redacted.video_url.startswith("https://uploads.s3.eu-west-1.amazonaws.com/clips/a.mp4?")
    assert dict(query(redacted.video_url))["X-Amz-Expires"] == "3600"


def test_redact_source_leaves_the_submitted_source_untouched() -> None:
    source = VideoUrl(video_url=PRESIGNED)

    redact_source(source)

    assert source.video_url == PRESIGNED


def test_redact_source_returns_a_plain_url_source_as_it_is() -> None:
    source = VideoUrl(video_url="https://cdn.example.com/a.mp4")

    assert redact_source(source) == source


@pytest.mark.parametrize(
    "source",
    [KlingVideo(video_id="v", task_id="t"), S3Object(bucket="uploads", key="clips/a.mp4")],
    ids=["kling", "s3"],
)
def test_redact_source_returns_kling_and_s3_sources_as_they_are(
    source: KlingVideo | S3Object,
) -> None:
    assert redact_source(source) == source


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


def test_invalid_job_result_drops_metadata_nested_too_deeply_to_serialize() -> None:
    raw = {"metadata": nested(260)}

    result = invalid_job_result("j-1", raw, "job nests too deeply", received_at=datetime.now(UTC))

    assert result.metadata == {}
    json.loads(result.to_json())  # and the result itself can be published


def test_a_result_that_cannot_be_serialized_goes_out_smaller_with_the_reason() -> None:
    # Built around validation, as a bug could: its echo is nested past pydantic's limit.
    error = UpstreamUnavailable("still failing").to_result_error()
    made = failed("j-1", error, source=None, metadata={}, attempts=2, submitted_at=None)
    broken = made.model_copy(update={"metadata": nested(400)})
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's serialization error
        broken.to_json()

    wire = json.loads(serializable(broken))

    assert wire["metadata"] == {}
    assert wire["job_id"] == "j-1"
    assert wire["error"]["type"] == "upstream_unavailable"
    assert "metadata and source not echoed" in wire["error"]["message"]


def test_an_error_type_this_consumer_does_not_know_reads_as_internal_error() -> None:
    wire = json.loads(
        failed(
            "j-1",
            UpstreamUnavailable("x").to_result_error(),
            source=None,
            metadata={},
            attempts=1,
            submitted_at=None,
        ).to_json()
    )
    wire["error"]["type"] = "quota_exhausted_next_year"

    error = Result.model_validate(wire).error
    assert error is not None
    assert error.type == "internal_error"


@pytest.mark.parametrize(
    "url",
    [
        "https://bob:hunter2@cdn.example.com/a.mp4",
        "https://bob@cdn.example.com/a.mp4?X-Amz-Signature=abc",
        "http://bob:p%40ss@127.0.0.1:8080/a.mp4",
    ],
)
def test_a_url_loses_its_user_and_password_wherever_it_is_shown(url: str) -> None:
    shown = redact_url(url)
    assert "bob" not in shown
    assert "hunter2" not in shown
    assert "@" not in urlsplit(shown).netloc
    assert urlsplit(shown).hostname == urlsplit(url).hostname
    source = redact_source(VideoUrl(video_url=url))
    assert isinstance(source, VideoUrl)
    assert source.video_url == shown
    assert "bob" not in shown_kwargs({"job": {"source": {"kind": "url", "video_url": url}}})
    assert "bob" not in SecretScrubber()(f"GET {url} failed")


def test_an_echo_with_a_lone_surrogate_still_makes_a_result_utf8_can_carry() -> None:
    raw = {"source": {"kind": "kling", "video_id": "v", "task_id": "\ud800"}, "metadata": {}}

    result = invalid_job_result("j-1", raw, "task_id is not text", received_at=datetime.now(UTC))

    assert result.to_wire()["source"]["task_id"] == "\ufffd"
    serializable(result).encode()
