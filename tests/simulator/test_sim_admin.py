"""The `/_sim` admin API: stats, recent requests and reset."""

from __future__ import annotations

from collections.abc import Callable

import requests

from simulator.testing import RunningSimulator
from tests.simulator.kling_shapes import BEARER, kling_envelope, success_data

DEMO = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}


def test_stats_count_calls_by_outcome_code_and_video(sim: RunningSimulator) -> None:
    sim.set_faults(script=["kling:1302", "comet:503"])
    for _ in range(3):
        requests.post(sim.comet_url, json=DEMO, headers=BEARER, timeout=10)
    requests.post(sim.comet_url, json=DEMO, timeout=10)
    requests.post(sim.comet_url, json={"video_id": "x"}, headers=BEARER, timeout=10)

    stats = sim.stats()

    assert stats["calls"] == 5
    assert stats["by_outcome"] == {
        "succeeded": 1,
        "clip_rejected": 0,
        "request_rejected": 1,
        "auth_failed": 1,
        "account_blocked": 0,
        "concurrency_limited": 0,
        "fault": 2,
    }
    assert stats["by_code"] == {"1302": 1, "http:503": 1, "0": 1, "1001": 1, "1201": 1}
    assert stats["calls_per_video"] == {"kling-demo-video-1": 4, "x": 1}
    assert stats["sessions_opened"] == 1
    assert stats["in_flight"] == 0
    assert stats["peak_in_flight"] == 1


def test_requests_show_the_exact_body_and_authorization(sim: RunningSimulator) -> None:
    requests.post(sim.kling_url, json=DEMO, headers={"Authorization": "Bearer abc"}, timeout=10)
    requests.post(sim.comet_url, data=b"not json", timeout=10)

    assert sim.requests() == [
        {
            "path": "/v1/videos/multi-elements/init-selection",
            "authorization": "Bearer abc",
            "body": DEMO,
        },
        {
            "path": "/kling/v1/videos/multi-elements/init-selection",
            "authorization": None,
            "body": "not json",
        },
    ]


def test_reset_clears_stats_requests_script_and_faults(
    make_sim: Callable[..., RunningSimulator],
) -> None:
    # Given a simulator started with a latency and changed at run time
    sim = make_sim(latency_ms=1)
    requests.post(sim.comet_url, json=DEMO, headers=BEARER, timeout=10)
    sim.set_faults(script=["kling:5000"], fail_rate=1.0)

    sim.reset()

    assert sim.stats()["calls"] == 0
    assert sim.requests() == []
    faults = sim.faults()
    assert (faults["script"], faults["fail_rate"], faults["latency_ms"]) == ([], 0.0, 1.0)
    success_data(requests.post(sim.comet_url, json=DEMO, headers=BEARER, timeout=10))


def test_an_unknown_session_has_no_normalized_video(sim: RunningSimulator) -> None:
    response = requests.get(sim.base_url + "/_sim/normalized/nope.mp4", timeout=10)

    kling_envelope(response, 1203)


def test_a_video_id_session_serves_a_normalized_clip(sim: RunningSimulator) -> None:
    data = success_data(requests.post(sim.comet_url, json=DEMO, headers=BEARER, timeout=10))

    response = requests.get(data["normalized_video"], timeout=10)

    assert response.status_code == 200
    assert response.content[4:8] == b"ftyp"
