"""Answer shapes from kling-api.md, checked field by field by the simulator tests."""

from __future__ import annotations

from typing import Any

import requests

#: Keys of every Kling envelope.
ENVELOPE_KEYS = {"code", "message", "request_id", "data"}
#: Keys of `data` on a successful init-selection.
SUCCESS_DATA_KEYS = {
    "status",
    "session_id",
    "final_unit_deduction",
    "final_balance_deduction",
    "fps",
    "original_duration",
    "width",
    "height",
    "total_frame",
    "normalized_video",
}
#: HTTP status of each Kling code (the table in kling-api.md, restated independently).
HTTP_BY_CODE = {
    **dict.fromkeys((1000, 1001, 1002, 1003, 1004), 401),
    **dict.fromkeys((1100, 1101, 1102), 429),
    1103: 403,
    **dict.fromkeys((1200, 1201), 400),
    **dict.fromkeys((1202, 1203), 404),
    **dict.fromkeys((1300, 1301), 400),
    **dict.fromkeys((1302, 1303, 1304), 429),
    5000: 500,
    5001: 503,
    5002: 504,
}
BEARER = {"Authorization": "Bearer test-key"}


def kling_envelope(response: requests.Response, code: int) -> dict[str, Any]:
    """Check `response` is a Kling envelope with `code` and the right HTTP status; its data."""
    expected_http = 200 if code == 0 else HTTP_BY_CODE[code]
    assert response.status_code == expected_http, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["request_id"], str)
    assert body["request_id"]
    assert isinstance(body["data"], dict)
    if code != 0:
        assert body["data"] == {}
    return body


def success_data(response: requests.Response) -> dict[str, Any]:
    """Check a successful init-selection answer and return its `data`."""
    body = kling_envelope(response, 0)
    data: dict[str, Any] = body["data"]
    assert set(data) == SUCCESS_DATA_KEYS
    assert data["status"] == 0
    assert isinstance(data["session_id"], str)
    assert len(data["session_id"]) == 32
    assert set(data["final_balance_deduction"]) == {"quota", "list_price"}
    assert isinstance(data["original_duration"], int)
    assert isinstance(data["total_frame"], int)
    assert data["normalized_video"].endswith(f"/_sim/normalized/{data['session_id']}.mp4")
    return data


def comet_envelope(response: requests.Response, status: int, code: str) -> None:
    """Check a CometAPI gateway error."""
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "comet_api_error"
    assert error["param"] == ""
    assert error["code"] == code
    assert "(request id: " in error["message"]
