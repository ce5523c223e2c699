"""The job message of CONTRACT.md ("A job"): what parse_job accepts, refuses and fills in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from contract.errors import InvalidJobError
from contract.jobs import KlingVideo, S3Object, VideoUrl, complete_job, make_job, parse_job

KLING_SOURCE: dict[str, Any] = {"kind": "kling", "video_id": "vid-1", "task_id": "task-1"}
S3_SOURCE: dict[str, Any] = {
    "kind": "s3",
    "bucket": "uploads",
    "key": "clips/a.mp4",
    "version_id": None,
}
URL_SOURCE: dict[str, Any] = {"kind": "url", "video_url": "https://cdn.example.com/clips/a.mp4"}

#: 16 KiB, the contract's metadata limit.
LIMIT = 16 * 1024
#: Bytes of compact JSON around the value in ``{"k":"<value>"}``: ``{"k":"`` and ``"}``.
ONE_KEY_OVERHEAD = len('{"k":"') + len('"}')


def job(source: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A complete, valid wire job, with ``fields`` replaced."""
    data: dict[str, Any] = {
        "job_id": "upl-20261124-000123",
        "source": URL_SOURCE if source is None else source,
        "metadata": {"upload_id": 42},
        "submitted_at": "2026-11-24T10:00:00Z",
    }
    data.update(fields)
    return data


def refusal(data: object, *, allow_http: bool = False) -> str:
    """The reason parse_job gives for refusing ``data``; fails the test if it accepts it."""
    with pytest.raises(InvalidJobError) as caught:
        parse_job(data, allow_http=allow_http)
    return str(caught.value)


# Valid jobs -----------------------------------------------------------------------------------


def test_kling_job_is_parsed_into_a_kling_video_source() -> None:
    parsed = parse_job(job(KLING_SOURCE))

    assert parsed.source == KlingVideo(video_id="vid-1", task_id="task-1")
    assert parsed.job_id == "upl-20261124-000123"
    assert parsed.metadata == {"upload_id": 42}
    assert parsed.submitted_at == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def test_s3_job_is_parsed_into_an_s3_object_source() -> None:
    parsed = parse_job(job(S3_SOURCE))

    assert parsed.source == S3Object(bucket="uploads", key="clips/a.mp4", version_id=None)


def test_s3_job_keeps_its_version_id() -> None:
    parsed = parse_job(job({**S3_SOURCE, "version_id": "3HL4kqtJlcpXroDTDmJ"}))

    assert isinstance(parsed.source, S3Object)
    assert parsed.source.version_id == "3HL4kqtJlcpXroDTDmJ"


def test_s3_job_without_version_id_means_the_latest_version() -> None:
    source = {key: value for key, value in S3_SOURCE.items() if key != "version_id"}

    parsed = parse_job(job(source))

    assert isinstance(parsed.source, S3Object)
    assert parsed.source.version_id is None


def test_https_url_job_is_parsed_into_a_video_url_source() -> None:
    parsed = parse_job(job(URL_SOURCE))

    assert parsed.source == VideoUrl(video_url="https://cdn.example.com/clips/a.mp4")


@pytest.mark.parametrize("source", [KLING_SOURCE, S3_SOURCE, URL_SOURCE], ids=lambda s: s["kind"])
def test_job_round_trips_through_its_wire_form(source: dict[str, Any]) -> None:
    original = parse_job(job(source))

    assert parse_job(original.to_wire()) == original


def test_wire_form_of_a_job_is_the_contract_shape() -> None:
    wire = parse_job(job(S3_SOURCE)).to_wire()

    assert wire == {
        "job_id": "upl-20261124-000123",
        "source": {"kind": "s3", "bucket": "uploads", "key": "clips/a.mp4", "version_id": None},
        "metadata": {"upload_id": 42},
        "submitted_at": "2026-11-24T10:00:00Z",
    }


# Exactly one input ----------------------------------------------------------------------------


def test_kling_source_that_also_has_a_video_url_is_refused() -> None:
    reason = refusal(job({**KLING_SOURCE, "video_url": "https://cdn.example.com/a.mp4"}))

    assert "video_url" in reason


def test_url_source_that_also_has_a_video_id_is_refused() -> None:
    reason = refusal(job({**URL_SOURCE, "video_id": "vid-1"}))

    assert "video_id" in reason


def test_s3_source_that_also_has_a_video_url_is_refused() -> None:
    reason = refusal(job({**S3_SOURCE, "video_url": "https://cdn.example.com/a.mp4"}))

    assert "video_url" in reason


def test_source_with_both_inputs_and_no_kind_is_refused() -> None:
    reason = refusal(
        job({"video_id": "vid-1", "task_id": "t", "video_url": "https://cdn.example.com/a.mp4"})
    )

    assert "source" in reason


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "kling"},
        {"kind": "url"},
        {"kind": "s3"},
        {},
    ],
    ids=["kling", "url", "s3", "no-kind"],
)
def test_source_with_no_input_is_refused(source: dict[str, Any]) -> None:
    reason = refusal(job(source))

    assert "source" in reason


def test_job_without_source_is_refused() -> None:
    data = job()
    del data["source"]

    assert "source" in refusal(data)


def test_unknown_source_kind_is_refused() -> None:
    reason = refusal(job({"kind": "ftp", "video_url": "https://cdn.example.com/a.mp4"}))

    assert "source" in reason


def test_kling_source_without_task_id_is_refused() -> None:
    reason = refusal(job({"kind": "kling", "video_id": "vid-1"}))

    assert "task_id" in reason


def test_kling_source_with_empty_task_id_is_refused() -> None:
    reason = refusal(job({**KLING_SOURCE, "task_id": ""}))

    assert "task_id" in reason


def test_kling_source_with_empty_video_id_is_refused() -> None:
    reason = refusal(job({**KLING_SOURCE, "video_id": ""}))

    assert "video_id" in reason


def test_s3_source_with_empty_key_is_refused() -> None:
    reason = refusal(job({**S3_SOURCE, "key": ""}))

    assert "key" in reason


# job_id ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    ["a", "A" * 128, "upl-20261124-000123", "ns:job.1_x-2", "0123456789"],
    ids=["one-char", "128-chars", "contract-example", "all-punctuation", "digits"],
)
def test_job_id_of_allowed_characters_is_accepted(job_id: str) -> None:
    assert parse_job(job(job_id=job_id)).job_id == job_id


@pytest.mark.parametrize(
    "job_id",
    ["", "A" * 129, "has space", "a/b", "a\nb", "abc\n", "é", "a#b", "a?b"],
    ids=[
        "empty",
        "129-chars",
        "space",
        "slash",
        "newline",
        "trailing-newline",
        "non-ascii",
        "hash",
        "question-mark",
    ],
)
def test_bad_job_id_is_refused(job_id: str) -> None:
    reason = refusal(job(job_id=job_id))

    assert "job_id" in reason


def test_job_id_that_is_not_a_string_is_refused() -> None:
    assert "job_id" in refusal(job(job_id=123))


def test_job_without_job_id_is_refused_by_parse_job() -> None:
    data = job()
    del data["job_id"]

    assert "job_id" in refusal(data)


# video_url ------------------------------------------------------------------------------------


def test_http_url_is_refused_by_default() -> None:
    reason = refusal(job({"kind": "url", "video_url": "http://cdn.example.com/a.mp4"}))

    assert "video_url" in reason
    assert "ALLOW_HTTP_VIDEO_URLS" in reason


def test_http_url_is_accepted_when_allow_http_is_on() -> None:
    parsed = parse_job(
        job({"kind": "url", "video_url": "http://127.0.0.1:9000/a.mp4"}), allow_http=True
    )

    assert parsed.source == VideoUrl(video_url="http://127.0.0.1:9000/a.mp4")


def test_https_url_is_still_accepted_when_allow_http_is_on() -> None:
    parsed = parse_job(job(URL_SOURCE), allow_http=True)

    assert parsed.source == VideoUrl(video_url=URL_SOURCE["video_url"])


@pytest.mark.parametrize("allow_http", [False, True])
@pytest.mark.parametrize(
    "video_url",
    [
        "",
        "not a url",
        "cdn.example.com/a.mp4",
        "/clips/a.mp4",
        "https://",
        "https:///clips/a.mp4",
        "ftp://cdn.example.com/a.mp4",
        "file:///etc/passwd",
        "s3://uploads/clips/a.mp4",
        "javascript:alert(1)",
    ],
)
def test_string_that_is_not_a_web_url_is_refused(video_url: str, allow_http: bool) -> None:
    reason = refusal(job({"kind": "url", "video_url": video_url}), allow_http=allow_http)

    assert "video_url" in reason


@pytest.mark.parametrize(
    "video_url",
    ["https://cdn example.com/a.mp4", "https://cdn.example.com:99999/a.mp4"],
    ids=["space-in-host", "port-out-of-range"],
)
def test_url_with_an_impossible_host_or_port_is_refused(video_url: str) -> None:
    reason = refusal(job({"kind": "url", "video_url": video_url}))

    assert "video_url" in reason


def test_video_url_longer_than_4096_characters_is_refused() -> None:
    url = "https://cdn.example.com/" + "a" * 4096

    assert "video_url" in refusal(job({"kind": "url", "video_url": url}))


# metadata -------------------------------------------------------------------------------------


def test_metadata_of_exactly_16_kib_serialized_is_accepted() -> None:
    metadata = {"k": "x" * (LIMIT - ONE_KEY_OVERHEAD)}

    assert parse_job(job(metadata=metadata)).metadata == metadata


def test_metadata_one_byte_over_16_kib_is_refused() -> None:
    metadata = {"k": "x" * (LIMIT - ONE_KEY_OVERHEAD + 1)}

    reason = refusal(job(metadata=metadata))

    assert "metadata" in reason


def test_metadata_limit_counts_utf8_bytes_not_characters() -> None:
    # "é" is two bytes in UTF-8: half as many of them fit.
    fits = {"k": "é" * ((LIMIT - ONE_KEY_OVERHEAD) // 2)}
    too_big = {"k": "é" * ((LIMIT - ONE_KEY_OVERHEAD) // 2 + 1)}

    assert parse_job(job(metadata=fits)).metadata == fits
    assert "metadata" in refusal(job(metadata=too_big))


def test_metadata_keeps_nested_json_untouched() -> None:
    metadata = {"upload": {"id": 42, "tags": ["a", "b"], "ratio": 0.5, "ok": True, "none": None}}

    assert parse_job(job(metadata=metadata)).metadata == metadata


@pytest.mark.parametrize(
    "metadata", [[1, 2], "text", 42, True], ids=["array", "string", "int", "bool"]
)
def test_metadata_that_is_not_an_object_is_refused(metadata: object) -> None:
    assert "metadata" in refusal(job(metadata=metadata))


# Optional fields ------------------------------------------------------------------------------


def test_job_without_metadata_or_submitted_at_is_valid() -> None:
    parsed = parse_job({"job_id": "j-1", "source": URL_SOURCE})

    assert parsed.metadata == {}
    assert parsed.submitted_at is None


def test_complete_job_fills_in_empty_metadata_and_the_current_time() -> None:
    before = datetime.now(UTC)
    completed = complete_job({"job_id": "j-1", "source": URL_SOURCE})
    after = datetime.now(UTC)

    assert completed.metadata == {}
    assert completed.submitted_at is not None
    assert completed.submitted_at.utcoffset() == timedelta(0)
    assert before <= completed.submitted_at <= after


def test_complete_job_makes_a_uuid4_job_id_when_none_is_given() -> None:
    completed = complete_job({"source": URL_SOURCE})

    assert uuid.UUID(completed.job_id).version == 4


def test_complete_job_makes_a_fresh_job_id_each_time() -> None:
    first = complete_job({"source": URL_SOURCE})
    second = complete_job({"source": URL_SOURCE})

    assert first.job_id != second.job_id


def test_complete_job_keeps_what_the_caller_gave() -> None:
    completed = complete_job(job(S3_SOURCE))

    assert completed == parse_job(job(S3_SOURCE))


def test_complete_job_still_validates() -> None:
    with pytest.raises(InvalidJobError, match="job_id"):
        complete_job({"job_id": "a/b", "source": URL_SOURCE})


def test_make_job_builds_a_complete_job_from_a_source() -> None:
    made = make_job(KlingVideo(video_id="v", task_id="t"), metadata={"n": 1})

    assert made.source == KlingVideo(video_id="v", task_id="t")
    assert made.metadata == {"n": 1}
    assert made.submitted_at is not None
    assert made.job_id


def test_make_job_refuses_http_unless_allowed() -> None:
    source = VideoUrl.model_construct(video_url="http://127.0.0.1/a.mp4")

    with pytest.raises(InvalidJobError, match="video_url"):
        make_job(source)
    made = make_job(source, allow_http=True)
    assert isinstance(made.source, VideoUrl)
    assert made.source.video_url == "http://127.0.0.1/a.mp4"


# submitted_at ---------------------------------------------------------------------------------


def test_naive_submitted_at_is_refused() -> None:
    reason = refusal(job(submitted_at="2026-11-24T10:00:00"))

    assert "submitted_at" in reason


def test_submitted_at_with_an_offset_keeps_the_instant() -> None:
    parsed = parse_job(job(submitted_at="2026-11-24T12:00:00+02:00"))

    assert parsed.submitted_at == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "submitted_at",
    ["yesterday", "2026-11-24", "24/11/2026 10:00", 1764000000],
    ids=["words", "date-only", "local-format", "unix-seconds"],
)
def test_submitted_at_that_is_not_rfc3339_is_refused(submitted_at: object) -> None:
    assert "submitted_at" in refusal(job(submitted_at=submitted_at))


# Extra fields and wrong types -----------------------------------------------------------------


def test_unknown_top_level_field_is_refused() -> None:
    reason = refusal(job(priority=1))

    assert "priority" in reason


def test_unknown_source_field_is_refused() -> None:
    reason = refusal(job({**S3_SOURCE, "region": "eu-west-1"}))

    assert "region" in reason


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({**KLING_SOURCE, "video_id": 123}, "video_id"),
        ({**KLING_SOURCE, "task_id": 456}, "task_id"),
        ({**S3_SOURCE, "bucket": ["uploads"]}, "bucket"),
        ({**S3_SOURCE, "version_id": 7}, "version_id"),
        ({"kind": "url", "video_url": {"href": "https://cdn.example.com/a.mp4"}}, "video_url"),
    ],
    ids=["video_id-int", "task_id-int", "bucket-list", "version_id-int", "video_url-object"],
)
def test_field_of_the_wrong_type_is_refused_and_named(source: dict[str, Any], field: str) -> None:
    assert field in refusal(job(source))


def test_every_problem_is_named_in_one_message() -> None:
    reason = refusal(job({"kind": "kling", "video_id": 1}, job_id="a b"))

    assert "job_id" in reason
    assert "video_id" in reason
    assert "task_id" in reason


@pytest.mark.parametrize("data", [[1, 2], "job", 42, None], ids=["array", "string", "int", "null"])
def test_message_that_is_not_a_json_object_is_refused(data: object) -> None:
    refusal(data)


def test_invalid_job_error_is_a_value_error() -> None:
    assert issubclass(InvalidJobError, ValueError)


# S3Object.from_uri ----------------------------------------------------------------------------


def test_s3_uri_splits_into_bucket_and_key() -> None:
    assert S3Object.from_uri("s3://uploads/clips/2026/a.mp4") == S3Object(
        bucket="uploads", key="clips/2026/a.mp4"
    )


@pytest.mark.parametrize(
    "uri",
    [
        "s3://uploads",
        "s3://uploads/",
        "s3:///clips/a.mp4",
        "https://uploads/clips/a.mp4",
        "uploads/clips/a.mp4",
        "",
    ],
    ids=["no-key", "empty-key", "no-bucket", "https", "no-scheme", "empty"],
)
def test_malformed_s3_uri_is_refused(uri: str) -> None:
    with pytest.raises(InvalidJobError, match="s3://BUCKET/KEY"):
        S3Object.from_uri(uri)


def test_s3_uri_with_a_bucket_name_too_short_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket"):
        S3Object.from_uri("s3://ab/clips/a.mp4")


@pytest.mark.parametrize("key", ["clips/take?1.mp4", "clips/take#1.mp4"], ids=["question", "hash"])
def test_s3_uri_keeps_question_marks_and_hashes_in_the_key(key: str) -> None:
    assert S3Object.from_uri(f"s3://uploads/{key}").key == key


# Immutability ---------------------------------------------------------------------------------


def test_job_is_frozen() -> None:
    parsed = parse_job(job())

    with pytest.raises(ValidationError, match="frozen"):
        parsed.job_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (KlingVideo(video_id="v", task_id="t"), "video_id"),
        (S3Object(bucket="uploads", key="k"), "key"),
        (VideoUrl(video_url="https://cdn.example.com/a.mp4"), "video_url"),
    ],
    ids=["kling", "s3", "url"],
)
def test_sources_are_frozen(model: KlingVideo | S3Object | VideoUrl, field: str) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        model.__setattr__(field, "changed")
