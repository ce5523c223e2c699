"""Bearer authentication as Kling and CometAPI do it: a static key, or Kling's HS256 JWT.

`check_authorization` returns the Kling error code of a refused header, or None when accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the simulator accepts. With nothing configured, any non-empty bearer passes."""

    api_key: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    def __repr__(self) -> str:
        return (
            f"Credentials(api_key={'***' if self.api_key else None}, "
            f"access_key={self.access_key!r}, secret_key={'***' if self.secret_key else None})"
        )

    @property
    def jwt_enabled(self) -> bool:
        """Whether Kling's access-key/secret-key JWT scheme is configured."""
        return bool(self.access_key and self.secret_key)

    @property
    def open(self) -> bool:
        """Whether no credential is configured at all (the local demo)."""
        return not self.api_key and not self.jwt_enabled


def check_authorization(header: str | None, creds: Credentials) -> int | None:
    """None when `header` is accepted, else the Kling code: 1001 empty, 1002 invalid, 1003/1004."""
    if not header or not header.strip():
        return 1001
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return 1002
    token = token.strip()
    if not token:
        return 1001
    if creds.open:
        return None
    if creds.api_key and token == creds.api_key:
        return None
    if creds.jwt_enabled and token.count(".") == 2:
        return _check_jwt(token, creds)
    return 1002


def _check_jwt(token: str, creds: Credentials) -> int | None:
    """Kling's scheme: HS256 signed with the secret key, `iss` the access key, nbf <= now < exp.

    The signature is checked with PyJWT's HMAC algorithm directly rather than `jwt.decode`, which
    warns (an error under pytest) about secrets shorter than 32 bytes: Kling accepts those.
    """
    assert creds.secret_key is not None
    try:
        if jwt.get_unverified_header(token).get("alg") != "HS256":
            return 1002
        signing_input, _, signature = token.rpartition(".")
        hmac = HMACAlgorithm(HMACAlgorithm.SHA256)
        if not hmac.verify(
            signing_input.encode(), hmac.prepare_key(creds.secret_key), base64url_decode(signature)
        ):
            return 1002
        jwt.decode(
            token,
            options={
                "verify_signature": False,
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iat": False,
                "verify_iss": True,
                "require": ["iss", "exp"],
            },
            issuer=creds.access_key,
        )
    except jwt.ExpiredSignatureError:
        return 1004
    except jwt.ImmatureSignatureError:
        return 1003
    except (jwt.PyJWTError, ValueError):
        return 1002
    return None
