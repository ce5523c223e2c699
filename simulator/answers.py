"""The answers the simulator sends: Kling envelopes, CometAPI gateway errors and broken pages.

Every Kling answer is `{"code", "message", "request_id", "data"}`; on errors `data` is `{}` (the
envelope in kling-api.md always carries an object), never null.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

#: HTTP status of each Kling error code (kling-api.md, "Errors").
KLING_HTTP_STATUS: dict[int, int] = {
    0: 200,
    1000: 401,
    1001: 401,
    1002: 401,
    1003: 401,
    1004: 401,
    1100: 429,
    1101: 429,
    1102: 429,
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    1302: 429,
    1303: 429,
    1304: 429,
    5000: 500,
    5001: 503,
    5002: 504,
}

#: The message Kling gives each code when nothing more specific applies.
KLING_MESSAGES: dict[int, str] = {
    0: "SUCCEED",
    1000: "Authentication failed",
    1001: "Authorization is empty",
    1002: "Authorization is invalid",
    1003: "Authorization is not yet valid",
    1004: "Authorization has expired",
    1100: "Account exception",
    1101: "Account in arrears (postpaid scenario)",
    1102: "Resource pack depleted or expired (prepaid scenario)",
    1103: "Unauthorized access to requested resource, such as API/model",
    1200: "Invalid request parameters",
    1201: "Invalid parameters",
    1202: "The requested method is invalid",
    1203: "The requested resource does not exist",
    1300: "Trigger strategy of the platform",
    1301: "Trigger the content security policy of the platform",
    1302: "The API request is too fast, exceeding the platform's rate limit",
    1303: "Concurrency or QPS exceeds the prepaid resource package limit",
    1304: "Trigger the platform's IP whitelisting policy",
    5000: "Server internal error",
    5001: "Server temporarily unavailable, usually due to maintenance",
    5002: "Server internal timeout, usually due to a backlog",
}

#: Default CometAPI `error.code` per gateway HTTP status (CometAPI documents only a few).
COMET_DEFAULT_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "model_not_found",
    504: "gateway_timeout",
    524: "timeout",
}

#: What a misconfigured base URL answers: a web page, not the API.
HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>Welcome</title></head>"
    "<body><h1>Welcome</h1><p>This is a web page, not the API.</p></body></html>"
)


def new_request_id() -> str:
    """A fresh request id, as every answer carries one."""
    return uuid.uuid4().hex


def kling(
    code: int, message: str | None = None, data: dict[str, Any] | None = None
) -> web.Response:
    """A Kling envelope with the HTTP status the error table gives `code`."""
    body = {
        "code": code,
        "message": message if message is not None else KLING_MESSAGES.get(code, "Error"),
        "request_id": new_request_id(),
        "data": data if data is not None else {},
    }
    return web.Response(
        status=KLING_HTTP_STATUS.get(code, 400),
        body=json.dumps(body).encode(),
        content_type="application/json",
    )


def comet(status: int, code: str | None = None) -> web.Response:
    """A CometAPI gateway error: its own envelope, not Kling's."""
    error_code = code if code is not None else COMET_DEFAULT_CODES.get(status, "upstream_error")
    message = f"simulated CometAPI gateway error {status} (request id: {new_request_id()})"
    body = {
        "error": {"message": message, "type": "comet_api_error", "param": "", "code": error_code}
    }
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def html() -> web.Response:
    """HTTP 200 with an HTML page: what a wrong base URL tends to answer."""
    return web.Response(status=200, text=HTML_PAGE, content_type="text/html")


def redirect(location: str) -> web.Response:
    """HTTP 302 to a web page (a login page behind a wrong base URL)."""
    return web.Response(status=302, headers={"Location": location}, content_type="text/html")


def empty() -> web.Response:
    """HTTP 200 with an empty body claiming to be JSON."""
    return web.Response(status=200, body=b"", content_type="application/json")
