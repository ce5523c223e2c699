"""Request rules, paths and methods, and video_id requests against the known-video registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from simulator.testing import COMET_PATH, KLING_PATH, RunningSimulator
from tests.simulator.kling_shapes import BEARER, kling_envelope, success_data

DEMO = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}


def _post(sim: RunningSimulator, body: Any, path: str = COMET_PATH) -> requests.Response:
    return requests.post(sim.base_url + path, json=body, headers=BEARER, timeout=10)


@pytest.mark.parametrize("path", [KLING_PATH, COMET_PATH])
def test_both_paths_serve_init_selection(sim: RunningSimulator, path: str) -> None:
    data = success_data(_post(sim, DEMO, path))

    assert (data["fps"], data["original_duration"], data["total_frame"]) == (30, 5000, 150)
    assert (data["width"], data["height"]) == (1280, 720)


def test_a_body_that_is_not_a_json_object_is_an_invalid_request(sim: RunningSimulator) -> None:
    for raw in (b"not json", b"[1, 2]", b'"text"'):
        response = requests.post(sim.comet_url, data=raw, headers=BEARER, timeout=10)
        kling_envelope(response, 1200)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"video_id": "v", "task_id": "t", "video_url": "https://x/a.mp4"}, "both"),
        ({}, "neither"),
        ({"task_id": "t"}, "neither"),
        ({"video_id": "kling-demo-video-1"}, "'task_id' is required"),
        ({"video_url": "https://x/a.mp4", "mode": "pro"}, "unknown field 'mode'"),
        ({"video_url": 42}, "'video_url' must be a string"),
        ({"video_id": "v", "task_id": 7}, "'task_id' must be a string"),
        ({"video_url": "ftp://x/a.mp4"}, "'video_url' must be an http(s) URL"),
        ({"video_url": ""}, "'video_url' must not be empty"),
    ],
)
def test_a_bad_field_is_an_invalid_parameter_naming_it(
    sim: RunningSimulator, body: dict[str, Any], words: str
) -> None:
    result = kling_envelope(_post(sim, body), 1201)

    assert words in result["message"]


def test_a_wrong_method_on_the_endpoint_is_1202(sim: RunningSimulator) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = requests.request(method, sim.kling_url, headers=BEARER, timeout=10)
        kling_envelope(response, 1202)


def test_an_unknown_path_is_1203(sim: RunningSimulator) -> None:
    response = requests.post(
        sim.base_url + "/v1/videos/multi-elements/nope", json=DEMO, headers=BEARER, timeout=10
    )

    kling_envelope(response, 1203)


def test_an_unknown_video_id_does_not_exist(sim: RunningSimulator) -> None:
    body = kling_envelope(_post(sim, {"video_id": "nope", "task_id": "t"}), 1203)

    assert "'nope'" in body["message"]


def test_a_wrong_task_id_is_an_invalid_parameter(sim: RunningSimulator) -> None:
    body = kling_envelope(_post(sim, {**DEMO, "task_id": "other"}), 1201)

    assert "task_id" in body["message"]


def test_a_video_older_than_30_days_is_refused(sim: RunningSimulator) -> None:
    old = datetime.now(UTC) - timedelta(days=31)
    sim.add_video("old-video", "old-task", created_at=old)
    sim.add_video("recent-video", "recent-task", created_at=old + timedelta(days=2))

    body = kling_envelope(_post(sim, {"video_id": "old-video", "task_id": "old-task"}), 1201)
    assert "older than 30 days" in body["message"]
    success_data(_post(sim, {"video_id": "recent-video", "task_id": "recent-task"}))


def test_an_added_video_answers_with_its_own_facts(sim: RunningSimulator) -> None:
    sim.add_video("v60", "t60", 3000, fps=60, width=1920, height=1080)

    data = success_data(_post(sim, {"video_id": "v60", "task_id": "t60"}))

    assert (data["fps"], data["original_duration"], data["total_frame"]) == (60, 3000, 180)
    assert (data["width"], data["height"]) == (1920, 1080)


def test_a_known_video_breaking_a_clip_rule_is_refused_by_status(sim: RunningSimulator) -> None:
    sim.add_video("long", "t", 12000)

    body = kling_envelope(_post(sim, {"video_id": "long", "task_id": "t"}), 0)

    assert body["data"]["status"] == 2
    assert "session_id" not in body["data"]


def test_a_malformed_video_registration_is_refused(sim: RunningSimulator) -> None:
    response = requests.post(sim.base_url + "/_sim/videos", json={"video_id": "x"}, timeout=10)

    assert response.status_code == 400
    assert "task_id" in response.json()["error"]


def test_a_seed_file_is_loaded_from_videos(make_sim: Any, tmp_path: Any) -> None:
    seed = tmp_path / "videos.json"
    seed.write_text('[{"video_id": "s", "task_id": "t", "duration_ms": 8000, "fps": 24}]')
    sim = make_sim(videos_path=seed)

    data = success_data(_post(sim, {"video_id": "s", "task_id": "t"}))
    assert (data["fps"], data["original_duration"]) == (24, 8000)
    kling_envelope(_post(sim, DEMO), 1203)
