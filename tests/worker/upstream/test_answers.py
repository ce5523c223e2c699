"""Reading init-selection answers (docs/kling-api.md, "The answer" and "Errors")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.errors import (
    AccountBlocked,
    AuthFailed,
    BadGatewayAnswer,
    JobFailure,
    KlingWorkerError,
    RequestRejected,
    RetryableError,
    TokenNotAccepted,
    UpstreamBusy,
    UpstreamDown,
    VideoRejected,
)
from worker.upstream.answers import KLING_CODE_ERRORS, OpenedSession, read_answer

JSON = "application/json"
HTML = "text/html; charset=utf-8"

#: kling-api.md's error table, written out from the page: code → (HTTP status, error class,
#: ``error_type`` in the result, or ``None`` when the error is retried instead).
DOCUMENTED_CODES: dict[int, tuple[int, type[KlingWorkerError], str | None]] = {
    1000: (401, AuthFailed, "auth_failed"),
    1001: (401, AuthFailed, "auth_failed"),
    1002: (401, AuthFailed, "auth_failed"),
    1003: (401, TokenNotAccepted, "auth_failed"),
    1004: (401, TokenNotAccepted, "auth_failed"),
    1100: (429, AccountBlocked, "account_blocked"),
    1101: (429, AccountBlocked, "account_blocked"),
    1102: (429, AccountBlocked, "account_blocked"),
    1103: (403, AuthFailed, "auth_failed"),
    1200: (400, RequestRejected, "request_rejected"),
    1201: (400, RequestRejected, "request_rejected"),
    1202: (404, RequestRejected, "request_rejected"),
    1203: (404, RequestRejected, "request_rejected"),
    1300: (400, RequestRejected, "request_rejected"),
    1301: (400, RequestRejected, "request_rejected"),
    1302: (429, UpstreamBusy, None),
    1303: (429, UpstreamBusy, None),
    1304: (429, AccountBlocked, "account_blocked"),
    5000: (500, UpstreamDown, None),
    5001: (503, UpstreamDown, None),
    5002: (504, UpstreamDown, None),
}
RETRYABLE_CODES = {1302, 1303, 5000, 5001, 5002}


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def kling(code: int, data: object = None, message: str = "", request_id: str = "req-1") -> bytes:
    return body({"code": code, "message": message, "request_id": request_id, "data": data})


def gateway(code: str, message: str = "failed (request id: gw-1)") -> bytes:
    return body(
        {"error": {"message": message, "type": "comet_api_error", "param": "", "code": code}}
    )


def success_data(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": 0,
        "session_id": "sess-1",
        "final_unit_deduction": "1",
        "fps": 30,
        "original_duration": 5000,
        "width": 1280,
        "height": 720,
        "total_frame": 150,
        "normalized_video": "https://cdn.example.com/normalized.mp4",
    }
    data.update(fields)
    return data


def raised(http_status: int, content_type: str, answer: bytes) -> KlingWorkerError:
    with pytest.raises(KlingWorkerError) as caught:
        read_answer(http_status, content_type, answer)
    return caught.value


# Kling codes ----------------------------------------------------------------------------------


def test_code_table_covers_exactly_the_documented_codes() -> None:
    assert set(KLING_CODE_ERRORS) == set(DOCUMENTED_CODES)


@pytest.mark.parametrize("code", sorted(DOCUMENTED_CODES))
def test_kling_code_raises_the_documented_error(code: int) -> None:
    http_status, error_class, _ = DOCUMENTED_CODES[code]

    error = raised(http_status, JSON, kling(code, message="why not"))

    assert type(error) is error_class
    assert error.api_code == code
    assert error.http_status == http_status
    assert "why not" in error.message


@pytest.mark.parametrize("code", sorted(DOCUMENTED_CODES))
def test_kling_code_is_retryable_only_where_the_table_says_so(code: int) -> None:
    http_status, _, _ = DOCUMENTED_CODES[code]

    error = raised(http_status, JSON, kling(code))

    assert isinstance(error, RetryableError) is (code in RETRYABLE_CODES)
    assert isinstance(error, JobFailure) is (code not in RETRYABLE_CODES)


@pytest.mark.parametrize(
    "code", sorted(code for code, (_, _, kind) in DOCUMENTED_CODES.items() if kind is not None)
)
def test_terminal_kling_code_has_the_documented_error_type(code: int) -> None:
    http_status, _, error_type = DOCUMENTED_CODES[code]

    error = raised(http_status, JSON, kling(code))

    assert isinstance(error, JobFailure)
    assert error.error_type == error_type
    result_error = error.to_result_error()
    assert result_error.type == error_type
    assert result_error.retryable is False
    assert result_error.api_code == code
    assert result_error.http_status == http_status


@pytest.mark.parametrize("code", sorted(DOCUMENTED_CODES))
def test_kling_code_is_classified_on_the_body_not_the_http_status(code: int) -> None:
    _, error_class, _ = DOCUMENTED_CODES[code]

    assert type(raised(200, JSON, kling(code))) is error_class


def test_code_1303_is_retryable_busy() -> None:
    assert type(raised(429, JSON, kling(1303))) is UpstreamBusy


def test_code_1102_is_an_account_block_even_though_it_comes_as_429() -> None:
    error = raised(429, JSON, kling(1102))

    assert type(error) is AccountBlocked
    assert not isinstance(error, RetryableError)


@pytest.mark.parametrize("code", [1003, 1004])
def test_jwt_timing_codes_ask_for_a_re_sign(code: int) -> None:
    assert isinstance(raised(401, JSON, kling(code)), TokenNotAccepted)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1103])
def test_plain_auth_codes_do_not_ask_for_a_re_sign(code: int) -> None:
    assert not isinstance(raised(401, JSON, kling(code)), TokenNotAccepted)


def test_unknown_code_with_429_is_busy() -> None:
    error = raised(429, JSON, kling(1399))

    assert type(error) is UpstreamBusy
    assert error.api_code == 1399


@pytest.mark.parametrize("http_status", [500, 502, 503])
def test_unknown_code_with_5xx_is_down(http_status: int) -> None:
    assert type(raised(http_status, JSON, kling(5999))) is UpstreamDown


@pytest.mark.parametrize(
    ("http_status", "error_class"), [(400, RequestRejected), (401, AuthFailed), (403, AuthFailed)]
)
def test_unknown_code_with_4xx_is_terminal(
    http_status: int, error_class: type[KlingWorkerError]
) -> None:
    error = raised(http_status, JSON, kling(1999))

    assert type(error) is error_class
    assert not isinstance(error, RetryableError)


def test_unknown_code_with_200_is_a_bad_gateway_answer() -> None:
    assert type(raised(200, JSON, kling(777))) is BadGatewayAnswer


# Success --------------------------------------------------------------------------------------


def test_code_0_status_0_and_a_session_id_open_a_session() -> None:
    opened = read_answer(200, JSON, kling(0, success_data(), request_id="req-42"))

    assert isinstance(opened, OpenedSession)
    assert opened.session_id == "sess-1"
    assert opened.request_id == "req-42"


def test_success_without_request_id_has_none() -> None:
    answer = body({"code": 0, "message": "SUCCEED", "data": success_data()})

    assert read_answer(200, JSON, answer).request_id is None


@pytest.mark.parametrize("status", [1, -1, 2])
def test_code_0_with_a_non_zero_data_status_is_a_video_rejection(status: int) -> None:
    error = raised(200, JSON, kling(0, success_data(status=status, message="fps is 25")))

    assert type(error) is VideoRejected
    assert isinstance(error, JobFailure)
    assert error.error_type == "video_rejected"
    assert "fps is 25" in error.message


def test_code_0_without_a_data_status_is_not_a_success() -> None:
    data = success_data()
    del data["status"]

    error = raised(200, JSON, kling(0, data))

    assert isinstance(error, JobFailure)


@pytest.mark.parametrize(
    "session_id", ["", None, 123, ["sess-1"]], ids=["empty", "null", "int", "list"]
)
def test_code_0_without_a_usable_session_id_is_a_bad_gateway_answer(session_id: object) -> None:
    error = raised(200, JSON, kling(0, success_data(session_id=session_id)))

    assert type(error) is BadGatewayAnswer
    assert error.error_type == "bad_gateway_answer"


def test_code_0_with_the_session_id_missing_is_a_bad_gateway_answer() -> None:
    data = success_data()
    del data["session_id"]

    assert type(raised(200, JSON, kling(0, data))) is BadGatewayAnswer


@pytest.mark.parametrize("data", [None, [], "ok"], ids=["null", "array", "string"])
def test_code_0_without_a_data_object_is_a_bad_gateway_answer(data: object) -> None:
    assert type(raised(200, JSON, kling(0, data))) is BadGatewayAnswer


def test_non_zero_code_is_an_error_even_with_a_session_id() -> None:
    error = raised(400, JSON, kling(1201, success_data()))

    assert type(error) is RequestRejected


# CometAPI gateway envelope --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "gateway_code", "error_class"),
    [
        (400, "invalid_parameter", RequestRejected),
        (401, "invalid_api_key", AuthFailed),
        (403, "forbidden", AuthFailed),
        (429, "rate_limit", UpstreamBusy),
        (500, "invalid_request", RequestRejected),
        (500, "internal_error", UpstreamDown),
        (503, "model_not_found", UpstreamDown),
        (504, "timeout", UpstreamDown),
        (524, "timeout", UpstreamDown),
    ],
    ids=[
        "400",
        "401",
        "403",
        "429",
        "500-invalid_request",
        "500",
        "503-model_not_found",
        "504",
        "524",
    ],
)
def test_gateway_error_is_classified_by_status_and_code(
    http_status: int, gateway_code: str, error_class: type[KlingWorkerError]
) -> None:
    error = raised(http_status, JSON, gateway(gateway_code, "no available channel (request id: x)"))

    assert type(error) is error_class
    assert error.http_status == http_status
    assert error.api_code is None
    assert "no available channel" in error.message


@pytest.mark.parametrize("http_status", [429, 500, 503, 504, 524])
def test_retryable_gateway_errors_are_retryable(http_status: int) -> None:
    assert isinstance(raised(http_status, JSON, gateway("busy")), RetryableError)


@pytest.mark.parametrize("http_status", [400, 401, 403])
def test_gateway_client_errors_are_terminal(http_status: int) -> None:
    error = raised(http_status, JSON, gateway("bad"))

    assert isinstance(error, JobFailure)
    assert not isinstance(error, RetryableError)


def test_gateway_500_invalid_request_is_not_retried() -> None:
    error = raised(500, JSON, gateway("invalid_request"))

    assert isinstance(error, JobFailure)
    assert error.error_type == "request_rejected"


def test_gateway_401_does_not_ask_for_a_re_sign() -> None:
    assert not isinstance(raised(401, JSON, gateway("invalid_api_key")), TokenNotAccepted)


# Answers that are not the API's JSON ----------------------------------------------------------


def test_html_page_with_200_is_a_bad_gateway_answer() -> None:
    error = raised(200, HTML, b"<!doctype html><html><body>Welcome</body></html>")

    assert type(error) is BadGatewayAnswer
    assert isinstance(error, JobFailure)
    assert error.http_status == 200
    assert "KLING_API_BASE_URL" in error.message


@pytest.mark.parametrize("http_status", [500, 502, 503, 504])
def test_html_error_page_with_5xx_is_retryable_upstream_down(http_status: int) -> None:
    error = raised(http_status, HTML, b"<html><body><h1>502 Bad Gateway</h1></body></html>")

    assert type(error) is UpstreamDown
    assert isinstance(error, RetryableError)
    assert error.http_status == http_status


@pytest.mark.parametrize("http_status", [200, 204, 404])
def test_empty_body_below_500_is_a_bad_gateway_answer(http_status: int) -> None:
    assert type(raised(http_status, "", b"")) is BadGatewayAnswer


def test_empty_body_with_503_is_retryable() -> None:
    assert type(raised(503, "", b"")) is UpstreamDown


@pytest.mark.parametrize(
    "answer",
    [b"[]", b'[{"code": 0}]', b'"ok"', b"42", b"null", b"true"],
    ids=["empty-array", "array", "string", "number", "null", "bool"],
)
def test_json_that_is_not_an_object_is_a_bad_gateway_answer(answer: bytes) -> None:
    assert type(raised(200, JSON, answer)) is BadGatewayAnswer


@pytest.mark.parametrize(
    ("content_type", "answer"),
    [("", b""), (HTML, b"<html><body>Moved</body></html>")],
    ids=["empty", "html"],
)
@pytest.mark.parametrize("http_status", [301, 302, 307])
def test_redirect_is_a_bad_gateway_answer(
    http_status: int, content_type: str, answer: bytes
) -> None:
    error = raised(http_status, content_type, answer)

    assert type(error) is BadGatewayAnswer
    assert not isinstance(error, RetryableError)


def test_truncated_json_is_a_bad_gateway_answer() -> None:
    assert type(raised(200, JSON, b'{"code": 0, "data": {')) is BadGatewayAnswer


def test_bytes_that_are_not_utf8_are_a_bad_gateway_answer() -> None:
    assert type(raised(200, "application/octet-stream", b"\xff\xfe\x00garbage")) is BadGatewayAnswer


@pytest.mark.parametrize(
    "payload",
    [{"message": "hi"}, {"code": "0", "data": {}}, {"code": True, "data": {}}, {"code": None}],
    ids=["no-code", "string-code", "bool-code", "null-code"],
)
def test_json_object_without_an_integer_code_is_a_bad_gateway_answer(payload: object) -> None:
    assert type(raised(200, JSON, body(payload))) is BadGatewayAnswer


def test_json_object_without_a_code_under_5xx_is_retryable() -> None:
    assert type(raised(502, JSON, body({"message": "bad gateway"}))) is UpstreamDown


# Video facts ----------------------------------------------------------------------------------


def test_video_facts_are_read_from_a_success() -> None:
    opened = read_answer(200, JSON, kling(0, success_data()))

    assert opened.video.model_dump() == {
        "fps": 30.0,
        "duration_ms": 5000,
        "width": 1280,
        "height": 720,
        "total_frames": 150,
        "normalized_video_url": "https://cdn.example.com/normalized.mp4",
    }


def test_float_duration_becomes_whole_milliseconds() -> None:
    opened = read_answer(200, JSON, kling(0, success_data(original_duration=5000.0)))

    assert opened.video.duration_ms == 5000
    assert type(opened.video.duration_ms) is int


def test_fractional_duration_is_rounded_to_the_millisecond() -> None:
    opened = read_answer(200, JSON, kling(0, success_data(original_duration=4999.9)))

    assert opened.video.duration_ms == 5000


def test_fps_is_a_float() -> None:
    opened = read_answer(200, JSON, kling(0, success_data(fps=24)))

    assert opened.video.fps == 24.0
    assert type(opened.video.fps) is float


def test_missing_video_facts_are_none() -> None:
    opened = read_answer(200, JSON, kling(0, {"status": 0, "session_id": "sess-1"}))

    assert opened.session_id == "sess-1"
    assert opened.video.model_dump() == {
        "fps": None,
        "duration_ms": None,
        "width": None,
        "height": None,
        "total_frames": None,
        "normalized_video_url": None,
    }


@pytest.mark.parametrize(
    ("field", "fact"),
    [
        ("fps", "fps"),
        ("original_duration", "duration_ms"),
        ("width", "width"),
        ("height", "height"),
        ("total_frame", "total_frames"),
    ],
)
@pytest.mark.parametrize("value", [True, False, "30", None, [30], {"v": 30}])
def test_video_fact_that_is_not_a_number_is_none(field: str, fact: str, value: object) -> None:
    opened = read_answer(200, JSON, kling(0, success_data(**{field: value})))

    assert getattr(opened.video, fact) is None


@pytest.mark.parametrize("value", ["", None, 42, True], ids=["empty", "null", "int", "bool"])
def test_normalized_video_that_is_not_a_url_string_is_none(value: object) -> None:
    opened = read_answer(200, JSON, kling(0, success_data(normalized_video=value)))

    assert opened.video.normalized_video_url is None


def test_bad_video_facts_do_not_spoil_the_session() -> None:
    opened = read_answer(200, JSON, kling(0, success_data(fps="thirty", width=True)))

    assert opened.session_id == "sess-1"
    assert opened.video.height == 720
