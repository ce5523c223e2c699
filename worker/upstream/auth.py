"""Credentials for the API: a static bearer key, or Kling's HS256 JWT signed with the secret key."""

from __future__ import annotations

import threading
import time
from typing import Protocol

import jwt

from contract.settings import Settings

#: Lifetime Kling's docs give the JWT (``exp`` = now + 1800 s).
JWT_LIFETIME_S = 1800
#: Re-sign this long before expiry, so a token never expires in flight.
JWT_REFRESH_MARGIN_S = 300
#: Kling's docs backdate ``nbf`` by five seconds against clock skew.
JWT_NOT_BEFORE_SKEW_S = 5


class Credentials(Protocol):
    def authorization(self) -> str | None:
        """The ``Authorization`` header value, or ``None`` when nothing is configured."""

    def renew(self) -> bool:
        """Fresh credentials after a 1003/1004 answer; ``False`` if there is nothing to renew."""


class NoCredentials:
    """No key configured: calls go out bare, and the API's 1001 fails them as ``auth_failed``."""

    def authorization(self) -> str | None:
        return None

    def renew(self) -> bool:
        return False


class BearerKey:
    """A static CometAPI or Kling API key."""

    def __init__(self, key: str) -> None:
        self._header = f"Bearer {key}"

    def __repr__(self) -> str:
        return "BearerKey(<secret>)"

    def authorization(self) -> str | None:
        return self._header

    def renew(self) -> bool:
        return False


class KlingJwt:
    """Kling's access-key scheme: a JWT re-signed before it expires, shared by all threads."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self._header = ""
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"KlingJwt(access_key={self._access_key!r}, secret_key=<secret>)"

    def authorization(self) -> str | None:
        if time.time() >= self._expires_at - JWT_REFRESH_MARGIN_S:
            self.renew()
        return self._header

    def renew(self) -> bool:
        with self._lock:
            now = int(time.time())
            claims = {
                "iss": self._access_key,
                "exp": now + JWT_LIFETIME_S,
                "nbf": now - JWT_NOT_BEFORE_SKEW_S,
            }
            token = jwt.encode(claims, self._secret_key, algorithm="HS256")
            self._header = f"Bearer {token}"
            self._expires_at = float(now + JWT_LIFETIME_S)
        return True


def credentials_from(settings: Settings) -> Credentials:
    """The bearer key when set, else the JWT scheme when both keys are set, else nothing."""
    return credentials_for(
        api_key=settings.kling_api_key.get_secret_value() if settings.kling_api_key else "",
        access_key=settings.kling_access_key or "",
        secret_key=settings.kling_secret_key.get_secret_value()
        if settings.kling_secret_key
        else "",
    )


def credentials_for(*, api_key: str, access_key: str, secret_key: str) -> Credentials:
    """The same choice for one account's keys (an empty value counts as unset)."""
    # An empty value (``KLING_API_KEY=`` in a .env template) counts as unset.
    if api_key:
        return BearerKey(api_key)
    if access_key and secret_key:
        return KlingJwt(access_key, secret_key)
    return NoCredentials()
