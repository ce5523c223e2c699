"""Authentication: a static bearer key, Kling's HS256 JWT, or (unconfigured) any bearer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import requests

from simulator.auth import Credentials
from simulator.testing import RunningSimulator
from tests.simulator.kling_shapes import kling_envelope, success_data

DEMO = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}
ACCESS, SECRET = "access-123", "a-secret-key-of-at-least-32-bytes!"


def _post(sim: RunningSimulator, headers: dict[str, str]) -> requests.Response:
    return requests.post(sim.kling_url, json=DEMO, headers=headers, timeout=10)


def _token(secret: str = SECRET, *, exp_in: int = 1800, nbf_in: int = -5, iss: str = ACCESS) -> str:
    now = int(time.time())
    claims = {"iss": iss, "exp": now + exp_in, "nbf": now + nbf_in}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture
def jwt_sim(make_sim: Callable[..., RunningSimulator]) -> RunningSimulator:
    return make_sim(access_key=ACCESS, secret_key=SECRET)


def test_a_missing_or_empty_header_is_1001(sim: RunningSimulator) -> None:
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer "}):
        kling_envelope(_post(sim, headers), 1001)


def test_without_credentials_any_bearer_is_accepted(sim: RunningSimulator) -> None:
    success_data(_post(sim, {"Authorization": "Bearer anything"}))


def test_a_header_that_is_not_a_bearer_is_1002(sim: RunningSimulator) -> None:
    kling_envelope(_post(sim, {"Authorization": "Basic dXNlcjpwdw=="}), 1002)


def test_the_configured_key_is_accepted_and_any_other_refused(
    make_sim: Callable[..., RunningSimulator],
) -> None:
    sim = make_sim(api_key="right")

    success_data(_post(sim, {"Authorization": "Bearer right"}))
    kling_envelope(_post(sim, {"Authorization": "Bearer wrong"}), 1002)
    kling_envelope(_post(sim, {}), 1001)
    assert sim.stats()["by_outcome"]["auth_failed"] == 2


def test_a_valid_jwt_is_accepted(jwt_sim: RunningSimulator) -> None:
    success_data(_post(jwt_sim, {"Authorization": f"Bearer {_token()}"}))


@pytest.mark.parametrize(
    ("token_args", "code"),
    [
        ({"exp_in": -10}, 1004),
        ({"nbf_in": 600}, 1003),
        ({"secret": "not-the-secret-but-32-bytes-long-too"}, 1002),
        ({"iss": "someone-else"}, 1002),
    ],
)
def test_a_bad_jwt_is_refused_with_its_code(
    jwt_sim: RunningSimulator, token_args: dict[str, Any], code: int
) -> None:
    kling_envelope(_post(jwt_sim, {"Authorization": f"Bearer {_token(**token_args)}"}), code)


def test_key_and_jwt_may_both_be_configured(make_sim: Callable[..., RunningSimulator]) -> None:
    sim = make_sim(api_key="right", access_key=ACCESS, secret_key=SECRET)

    success_data(_post(sim, {"Authorization": "Bearer right"}))
    success_data(_post(sim, {"Authorization": f"Bearer {_token()}"}))
    kling_envelope(_post(sim, {"Authorization": "Bearer wrong"}), 1002)


def test_credentials_never_show_their_secrets() -> None:
    shown = repr(Credentials(api_key="k-secret", access_key=ACCESS, secret_key="s-secret"))

    assert "k-secret" not in shown
    assert "s-secret" not in shown


def test_a_short_secret_works_as_kling_accepts_it(
    make_sim: Callable[..., RunningSimulator],
) -> None:
    # Given a secret under PyJWT's recommended 32 bytes (the server must not warn or fail)
    sim = make_sim(access_key=ACCESS, secret_key="short")
    header = b'{"alg":"HS256","typ":"JWT"}'
    now = int(time.time())
    payload = f'{{"iss":"{ACCESS}","exp":{now + 600},"nbf":{now - 5}}}'.encode()
    token = _sign_by_hand(header, payload, b"short")

    success_data(_post(sim, {"Authorization": f"Bearer {token}"}))
    kling_envelope(
        _post(sim, {"Authorization": f"Bearer {_sign_by_hand(header, payload, b'x')}"}), 1002
    )


def _sign_by_hand(header: bytes, payload: bytes, secret: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"
