"""The one HTTP call: init-selection, on a pooled ``requests`` session."""

from __future__ import annotations

import json
import logging
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from contract.settings import Settings
from worker.errors import TokenNotAccepted, UpstreamDown
from worker.ops import metrics
from worker.upstream.answers import OpenedSession, read_answer
from worker.upstream.auth import Credentials, credentials_from

logger = logging.getLogger(__name__)

#: Path of init-selection below ``KLING_API_BASE_URL``.
INIT_SELECTION_PATH = "/v1/videos/multi-elements/init-selection"


class KlingClient:
    """Opens editing sessions; thread-safe, one per worker process."""

    def __init__(
        self, *, base_url: str, credentials: Credentials, timeout_s: float, pool_size: int
    ) -> None:
        self.endpoint = base_url.rstrip("/") + INIT_SELECTION_PATH
        self._credentials = credentials
        self._timeout_s = timeout_s
        # The call goes straight to the connection pool's adapter: no session means no proxy
        # scan of the environment (docs/calibration.md, trap 4), no cookie jar and no redirect
        # handling on each call, a fifth of what requests cost per job. The adapter follows no
        # redirect: one means a wrong base URL, reported rather than followed.
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> KlingClient:
        return cls(
            base_url=settings.kling_api_base_url,
            credentials=credentials_from(settings),
            timeout_s=settings.kling_timeout_seconds,
            pool_size=settings.worker_concurrency,
        )

    def init_selection(self, body: dict[str, Any]) -> OpenedSession:
        """Open a session for ``body``; raises the typed error the answer means.

        A JWT refused as not yet or no longer valid (1003/1004) is re-signed and sent once more.
        """
        try:
            return self._post(body)
        except TokenNotAccepted:
            if not self._credentials.renew():
                raise
            logger.info("Kling refused the JWT as expired or not yet valid; re-signed, retrying.")
            return self._post(body)

    def close(self) -> None:
        self._adapter.close()

    def _post(self, body: dict[str, Any]) -> OpenedSession:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        authorization = self._credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        # Timed with the answer read, so the latency metric is labelled with what it meant.
        with metrics.upstream_call():
            try:
                request = requests.Request(
                    "POST", self.endpoint, data=json.dumps(body).encode(), headers=headers
                ).prepare()
                response = self._adapter.send(request, timeout=self._timeout_s)
                # Read here, inside the guard: a body cut short fails on this read, not the send.
                answer: bytes = response.content
            except requests.Timeout as exc:
                raise UpstreamDown(f"no answer within {self._timeout_s:g} s") from exc
            except requests.RequestException as exc:
                raise UpstreamDown(f"connection to the API failed: {_fault(exc)}") from exc
            content_type = response.headers.get("Content-Type", "")
            return read_answer(response.status_code, content_type, answer)


#: What ``requests`` raises when the connection ends an answer's body before its end.
CUT_SHORT = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)


def _fault(exc: requests.RequestException) -> str:
    """What went wrong with the connection, in words that name no host, port or address."""
    if isinstance(
        exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    ):
        return "the answer was cut short"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed"
    return "no connection"
