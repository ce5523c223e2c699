"""Reading the API's answers: success only when ``code == 0``, ``data.status == 0`` and a
``session_id`` is present; everything else becomes a typed error (docs/kling-api.md).

Kling puts the reason in the body ``code``, so classification goes by the code first and by the
HTTP status only where no code is given (CometAPI's gateway envelope, non-JSON answers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from contract import bounded_json
from contract.results import Billing, VideoFacts
from worker.errors import (
    AccountBlocked,
    AuthFailed,
    BadGatewayAnswer,
    KlingWorkerError,
    RequestRejected,
    TokenNotAccepted,
    UpstreamBusy,
    UpstreamDown,
    VideoRejected,
)

#: Kling body codes and the error each one means.
KLING_CODE_ERRORS: dict[int, type[KlingWorkerError]] = {
    1000: AuthFailed,
    1001: AuthFailed,
    1002: AuthFailed,
    1003: TokenNotAccepted,
    1004: TokenNotAccepted,
    1100: AccountBlocked,
    1101: AccountBlocked,
    1102: AccountBlocked,
    1103: AuthFailed,
    1200: RequestRejected,
    1201: RequestRejected,
    1202: RequestRejected,
    1203: RequestRejected,
    1300: RequestRejected,
    1301: RequestRejected,
    1302: UpstreamBusy,
    1303: UpstreamBusy,
    1304: AccountBlocked,
    5000: UpstreamDown,
    5001: UpstreamDown,
    5002: UpstreamDown,
}

#: CometAPI gateway statuses that are worth another try.
GATEWAY_RETRY_STATUSES = frozenset({500, 502, 503, 504, 524})

#: Where each figure of :class:`~contract.results.Billing` sits in a selection answer's ``data``
#: (docs/kling-api.md, "Accounts, limits and billing"): a number, or a number sent as a string.
BILLING_FIELDS: dict[str, tuple[str, ...]] = {
    "units": ("final_unit_deduction",),
    "quota": ("final_balance_deduction", "quota"),
    "list_price": ("final_balance_deduction", "list_price"),
}


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A successful init-selection: the editing session and what the API saw of the clip."""

    session_id: str
    request_id: str | None
    video: VideoFacts
    billing: Billing | None = None


def read_answer(http_status: int, content_type: str, body: bytes) -> OpenedSession:
    """Return the opened session, or raise the :class:`KlingWorkerError` the answer means."""
    payload = _json_object(body)
    if payload is None:
        if http_status >= 500:
            raise UpstreamDown(f"HTTP {http_status} with a non-JSON body", http_status=http_status)
        shown = content_type or "no content type"
        raise BadGatewayAnswer(
            f"HTTP {http_status} answer is not the API's JSON ({shown}, {len(body)} bytes): "
            "check KLING_API_BASE_URL",
            http_status=http_status,
        )
    if "code" not in payload and isinstance(payload.get("error"), dict):
        raise _gateway_error(http_status, payload["error"])
    return _kling_answer(http_status, payload)


def _kling_answer(http_status: int, payload: dict[str, Any]) -> OpenedSession:
    code = payload.get("code")
    message = str(payload.get("message") or "")
    if not isinstance(code, int) or isinstance(code, bool):
        if http_status >= 500:
            raise UpstreamDown(f"HTTP {http_status} without a Kling code", http_status=http_status)
        raise BadGatewayAnswer(
            f"HTTP {http_status} JSON answer has no integer 'code'", http_status=http_status
        )
    if code != 0:
        error = KLING_CODE_ERRORS.get(code) or _error_for_status(http_status)
        raise error(f"Kling code {code}: {message}", api_code=code, http_status=http_status)

    data = payload.get("data")
    if not isinstance(data, dict):
        raise BadGatewayAnswer("code 0 answer without a 'data' object", http_status=http_status)
    status = data.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise BadGatewayAnswer(
            "code 0 answer without an integer data.status", api_code=code, http_status=http_status
        )
    if status != 0:
        reason = data.get("message") or data.get("msg") or message or "clip rejected"
        raise VideoRejected(
            f"clip rejected (data.status={status}): {reason}",
            api_code=code,
            http_status=http_status,
            billing=billing(data),
        )
    session_id = data.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise BadGatewayAnswer(
            "success answer without a session_id", api_code=code, http_status=http_status
        )
    request_id = payload.get("request_id")
    return OpenedSession(
        session_id=session_id,
        request_id=request_id if isinstance(request_id, str) else None,
        video=video_facts(data),
        billing=billing(data),
    )


def _gateway_error(http_status: int, error: dict[str, Any]) -> KlingWorkerError:
    """CometAPI's own envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    gateway_code = str(error.get("code") or "")
    message = f"gateway HTTP {http_status} {gateway_code}: {error.get('message') or ''}".strip()
    if http_status == 500 and gateway_code == "invalid_request":
        return RequestRejected(message, http_status=http_status)
    if http_status in GATEWAY_RETRY_STATUSES or http_status >= 500:
        return UpstreamDown(message, http_status=http_status)
    return _error_for_status(http_status)(message, http_status=http_status)


def _error_for_status(http_status: int) -> type[KlingWorkerError]:
    """The error an HTTP status alone means, for codes and envelopes we do not know."""
    if http_status == 429:
        return UpstreamBusy
    if http_status in (401, 403):
        return AuthFailed
    if http_status >= 500:
        return UpstreamDown
    if 400 <= http_status < 500:
        return RequestRejected
    return BadGatewayAnswer


def video_facts(data: dict[str, Any]) -> VideoFacts:
    """Clip facts from a success ``data``; each is ``None`` when absent or not a number."""
    normalized = data.get("normalized_video")
    return VideoFacts(
        fps=_number(data.get("fps")),
        duration_ms=_whole(data.get("original_duration")),
        width=_whole(data.get("width")),
        height=_whole(data.get("height")),
        total_frames=_whole(data.get("total_frame")),
        normalized_video_url=normalized if isinstance(normalized, str) and normalized else None,
    )


def billing(data: dict[str, Any]) -> Billing | None:
    """What a selection answer's ``data`` says it charged; ``None`` when it says nothing."""
    figures = {name: _amount(_dig(data, path)) for name, path in BILLING_FIELDS.items()}
    if all(value is None for value in figures.values()):
        return None
    return Billing(**figures)


def _dig(data: dict[str, Any], path: tuple[str, ...]) -> object:
    value: object = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _amount(value: object) -> float | None:
    """A finite number, or a string holding one (the API sends both); else ``None``."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


#: Largest answer body read as JSON: a selection answer is a few kilobytes.
MAX_ANSWER_BYTES = 1024 * 1024


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The answer's JSON object, or ``None`` for anything else: malformed, too deep, too large,
    or holding a number out of range (each breaks the API's JSON contract)."""
    try:
        payload = bounded_json.loads(body, max_bytes=MAX_ANSWER_BYTES)
    except bounded_json.UnreadableJson:
        return None
    return payload if isinstance(payload, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _whole(value: object) -> int | None:
    number = _number(value)
    return None if number is None else round(number)
