"""Fault injection: the script, seeded random faults, latency, slow answers and the task limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from simulator.testing import RunningSimulator
from tests.simulator.kling_shapes import (
    BEARER,
    HTTP_BY_CODE,
    comet_envelope,
    kling_envelope,
    success_data,
)

DEMO = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}


def _post(sim: RunningSimulator, timeout: float = 10) -> requests.Response:
    return requests.post(
        sim.comet_url, json=DEMO, headers=BEARER, timeout=timeout, allow_redirects=False
    )


@pytest.mark.parametrize("code", sorted(HTTP_BY_CODE))
def test_a_scripted_kling_code_answers_its_envelope_and_status(
    sim: RunningSimulator, code: int
) -> None:
    sim.set_faults(script=[f"kling:{code}"])

    kling_envelope(_post(sim), code)
    success_data(_post(sim))  # the script is used up: normal handling again


@pytest.mark.parametrize(
    ("entry", "status", "code"),
    [
        ("comet:429", 429, "rate_limit_exceeded"),
        ("comet:400", 400, "invalid_request"),
        ("comet:401", 401, "invalid_api_key"),
        ("comet:403", 403, "forbidden"),
        ("comet:500:invalid_request", 500, "invalid_request"),
        ("comet:500", 500, "internal_error"),
        ("comet:503:model_not_found", 503, "model_not_found"),
        ("comet:504", 504, "gateway_timeout"),
        ("comet:524", 524, "timeout"),
    ],
)
def test_a_scripted_gateway_error_answers_cometapis_envelope(
    sim: RunningSimulator, entry: str, status: int, code: str
) -> None:
    sim.set_faults(script=[entry])

    comet_envelope(_post(sim), status, code)


def test_broken_gateway_answers_are_not_the_api(sim: RunningSimulator) -> None:
    sim.set_faults(script=["html", "redirect", "empty", "drop", "ok"])

    page = _post(sim)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<html>" in page.text
    moved = _post(sim)
    assert moved.status_code == 302
    assert requests.get(moved.headers["Location"], timeout=10).text.startswith("<!DOCTYPE html>")
    blank = _post(sim)
    assert (blank.status_code, blank.content) == (200, b"")
    with pytest.raises(requests.ConnectionError):
        _post(sim)
    success_data(_post(sim))
    assert sim.stats()["by_outcome"]["fault"] == 4


def test_a_slow_answer_trips_a_client_timeout(sim: RunningSimulator) -> None:
    sim.set_faults(script=["slow"], slow_seconds=3)

    with pytest.raises(requests.ReadTimeout):
        _post(sim, timeout=0.5)


def test_latency_delays_every_answer(make_sim: Callable[..., RunningSimulator]) -> None:
    sim = make_sim(latency_ms=200)

    started = time.monotonic()
    success_data(_post(sim))

    assert time.monotonic() - started >= 0.2


def test_calls_over_the_parallel_limit_get_1303(sim: RunningSimulator) -> None:
    # Given a limit of 2 parallel tasks and calls that each take a second
    sim.set_faults(max_concurrency=2, slow_rate=1.0, slow_seconds=1.0)

    # When 5 calls are in flight at once
    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(lambda _: _post(sim), range(5)))

    # Then 2 succeed and 3 are refused as over the limit
    codes = sorted(response.json()["code"] for response in responses)
    assert codes == [0, 0, 1303, 1303, 1303]
    for response in responses:
        if response.json()["code"] == 1303:
            kling_envelope(response, 1303)
    stats = sim.stats()
    assert stats["by_outcome"]["concurrency_limited"] == 3
    assert stats["peak_in_flight"] >= 3


def _outcomes(sim: RunningSimulator, calls: int) -> list[tuple[int, str]]:
    results = []
    for _ in range(calls):
        response = _post(sim)
        body = response.json()
        label = str(body["code"]) if "code" in body else f"comet:{body['error']['code']}"
        results.append((response.status_code, label))
    return results


def test_seeded_random_faults_repeat_exactly(sim: RunningSimulator) -> None:
    faults = {"fail_rate": 0.3, "gateway_429_rate": 0.1, "gateway_503_rate": 0.1, "seed": 7}
    sim.set_faults(**faults)
    first = _outcomes(sim, 60)
    sim.set_faults(**faults)
    second = _outcomes(sim, 60)

    assert first == second
    statuses = {status for status, _ in first}
    assert {200, 429} <= statuses
    assert statuses <= {200, 429, 500, 503, 504}
    failed = sum(1 for status, _ in first if status != 200)
    assert 15 <= failed <= 45  # 50 % of 60, loosely


def test_fail_rate_uses_only_the_given_codes(make_sim: Callable[..., RunningSimulator]) -> None:
    sim = make_sim(fail_rate=1.0, fail_codes=[5001], seed=1)

    for _ in range(5):
        kling_envelope(_post(sim), 5001)


def test_bad_fault_settings_are_refused(sim: RunningSimulator) -> None:
    for faults in (
        {"fail_rate": 2},
        {"script": ["kling:42"]},
        {"script": ["bogus"]},
        {"nope": 1},
        {"max_concurrency": 0},
    ):
        response = requests.post(sim.base_url + "/_sim/faults", json=faults, timeout=10)
        assert response.status_code == 400, faults
        assert response.json()["error"]


def test_get_faults_shows_the_script_left(sim: RunningSimulator) -> None:
    sim.set_faults(script=["kling:1302", "comet:503:model_not_found"], latency_ms=5)
    _post(sim)

    faults = sim.faults()

    assert faults["script"] == ["comet:503:model_not_found"]
    assert faults["latency_ms"] == 5
