"""Credentials for the API (kling-api.md, "The call"): a bearer key or Kling's HS256 JWT."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from contract.settings import Settings
from worker.upstream import auth
from worker.upstream.auth import BearerKey, KlingJwt, NoCredentials, credentials_from

ACCESS_KEY = "ak-1f2e3d"
SECRET_KEY = "sk-secret-0a9b8c7d6e5f-long-enough-for-hs256"
API_KEY = "sk-comet-5f4e3d2c1b"
#: A fixed "now" for the fake clock.
T0 = 1_800_000_000


class Clock:
    """Stands in for ``time.time`` inside worker.upstream.auth."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(T0)
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=fake.time))
    return fake


def token_of(header: str | None) -> str:
    assert header is not None
    scheme, _, token = header.partition(" ")
    assert scheme == "Bearer"
    return token


def claims_of(header: str | None) -> dict[str, Any]:
    """The claims, checked against the secret but not against the real clock."""
    claims: dict[str, Any] = jwt.decode(
        token_of(header),
        SECRET_KEY,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    return claims


# Bearer key -----------------------------------------------------------------------------------


def test_bearer_key_is_sent_as_a_bearer_header() -> None:
    assert BearerKey(API_KEY).authorization() == f"Bearer {API_KEY}"


def test_bearer_key_has_nothing_to_renew() -> None:
    key = BearerKey(API_KEY)

    assert key.renew() is False
    assert key.authorization() == f"Bearer {API_KEY}"


def test_bearer_key_repr_hides_the_key() -> None:
    key = BearerKey(API_KEY)

    assert API_KEY not in repr(key)
    assert API_KEY not in str(key)


def test_no_credentials_send_no_header_and_cannot_renew() -> None:
    none = NoCredentials()

    assert none.authorization() is None
    assert none.renew() is False


# Kling JWT ------------------------------------------------------------------------------------


def test_jwt_is_valid_now_when_checked_by_pyjwt_with_the_secret() -> None:
    header = KlingJwt(ACCESS_KEY, SECRET_KEY).authorization()

    claims = jwt.decode(token_of(header), SECRET_KEY, algorithms=["HS256"])

    assert claims["iss"] == ACCESS_KEY


def test_jwt_is_signed_hs256() -> None:
    token = token_of(KlingJwt(ACCESS_KEY, SECRET_KEY).authorization())

    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_jwt_does_not_verify_with_another_secret() -> None:
    token = token_of(KlingJwt(ACCESS_KEY, SECRET_KEY).authorization())

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET_KEY + "-other", algorithms=["HS256"])


def test_jwt_claims_are_issuer_expiry_and_not_before(clock: Clock) -> None:
    claims = claims_of(KlingJwt(ACCESS_KEY, SECRET_KEY).authorization())

    assert claims["iss"] == ACCESS_KEY
    assert claims["exp"] == T0 + 1800
    assert claims["nbf"] == T0 - 5


def test_jwt_claims_follow_the_real_clock() -> None:
    before = time.time()
    claims = claims_of(KlingJwt(ACCESS_KEY, SECRET_KEY).authorization())
    after = time.time()

    assert before + 1800 - 1 <= claims["exp"] <= after + 1800
    assert before - 5 - 1 <= claims["nbf"] <= after - 5


def test_jwt_is_reused_while_it_is_far_from_expiry(clock: Clock) -> None:
    credentials = KlingJwt(ACCESS_KEY, SECRET_KEY)
    first = credentials.authorization()

    clock.now = T0 + 600
    assert credentials.authorization() == first
    clock.now = T0 + 1000
    assert credentials.authorization() == first


@pytest.mark.parametrize(
    "later", [1799, 1800, 5000], ids=["1s-before-expiry", "at-expiry", "long-after"]
)
def test_jwt_is_re_signed_near_or_after_expiry(clock: Clock, later: int) -> None:
    credentials = KlingJwt(ACCESS_KEY, SECRET_KEY)
    first = credentials.authorization()

    clock.now = T0 + later
    second = credentials.authorization()

    assert second != first
    claims = claims_of(second)
    assert claims["exp"] == T0 + later + 1800
    assert claims["nbf"] == T0 + later - 5


def test_re_signed_jwt_is_then_reused(clock: Clock) -> None:
    credentials = KlingJwt(ACCESS_KEY, SECRET_KEY)
    credentials.authorization()
    clock.now = T0 + 1800
    renewed = credentials.authorization()

    clock.now = T0 + 1900

    assert credentials.authorization() == renewed


def test_renew_signs_a_fresh_token(clock: Clock) -> None:
    credentials = KlingJwt(ACCESS_KEY, SECRET_KEY)
    first = credentials.authorization()
    clock.now = T0 + 10

    assert credentials.renew() is True
    renewed = credentials.authorization()

    assert renewed != first
    assert claims_of(renewed)["exp"] == T0 + 10 + 1800


def test_jwt_repr_hides_the_secret_key() -> None:
    credentials = KlingJwt(ACCESS_KEY, SECRET_KEY)
    credentials.authorization()

    assert SECRET_KEY not in repr(credentials)
    assert SECRET_KEY not in str(credentials)


def test_jwt_repr_does_not_show_the_token() -> None:
    credentials = KlingJwt(ACCESS_KEY, SECRET_KEY)
    token = token_of(credentials.authorization())

    assert token not in repr(credentials)


# credentials_from -----------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_env")
def test_bearer_key_wins_over_the_jwt_keys() -> None:
    credentials = credentials_from(
        settings(kling_api_key=API_KEY, kling_access_key=ACCESS_KEY, kling_secret_key=SECRET_KEY)
    )

    assert isinstance(credentials, BearerKey)
    assert credentials.authorization() == f"Bearer {API_KEY}"


@pytest.mark.usefixtures("no_env")
def test_both_jwt_keys_give_the_jwt_scheme() -> None:
    credentials = credentials_from(
        settings(kling_access_key=ACCESS_KEY, kling_secret_key=SECRET_KEY)
    )

    assert isinstance(credentials, KlingJwt)
    assert claims_of(credentials.authorization())["iss"] == ACCESS_KEY


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    "values",
    [{}, {"kling_access_key": ACCESS_KEY}, {"kling_secret_key": SECRET_KEY}],
    ids=["nothing", "access-key-only", "secret-key-only"],
)
def test_without_a_full_key_set_there_are_no_credentials(values: dict[str, str]) -> None:
    credentials = credentials_from(settings(**values))

    assert isinstance(credentials, NoCredentials)
    assert credentials.authorization() is None


@pytest.mark.usefixtures("no_env")
def test_credentials_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_API_KEY", API_KEY)

    assert credentials_from(settings()).authorization() == f"Bearer {API_KEY}"


@pytest.mark.usefixtures("no_env")
def test_empty_api_key_does_not_shadow_the_jwt_keys() -> None:
    credentials = credentials_from(
        settings(kling_api_key="", kling_access_key=ACCESS_KEY, kling_secret_key=SECRET_KEY)
    )

    assert isinstance(credentials, KlingJwt)
