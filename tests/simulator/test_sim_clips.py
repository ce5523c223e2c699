"""video_url requests: the simulator downloads the clip, probes it and applies the clip rules."""

from __future__ import annotations

import pytest
import requests

from simulator.clip_rules import RULE_STATUS
from simulator.samples import SAMPLE_CLIPS, VALID_CLIPS
from simulator.testing import RunningSimulator
from tests.simulator.clip_host import PADDED_NAME, PADDING_BYTES, ClipHost
from tests.simulator.kling_shapes import BEARER, kling_envelope, success_data

BAD_CLIPS = [name for name, clip in SAMPLE_CLIPS.items() if clip.breaks is not None]


def _post_url(sim: RunningSimulator, url: str) -> requests.Response:
    return requests.post(sim.comet_url, json={"video_url": url}, headers=BEARER, timeout=30)


@pytest.mark.parametrize("name", VALID_CLIPS)
def test_a_valid_clip_opens_a_session_with_its_real_facts(
    sim: RunningSimulator, clip_host: ClipHost, name: str
) -> None:
    clip = SAMPLE_CLIPS[name]

    data = success_data(_post_url(sim, clip_host.url(name)))

    assert data["fps"] == clip.fps
    assert data["original_duration"] == clip.duration_ms
    assert (data["width"], data["height"]) == (clip.width, clip.height)
    assert data["total_frame"] == clip.total_frames
    assert data["normalized_video"].startswith(sim.base_url)


@pytest.mark.parametrize("name", BAD_CLIPS)
def test_a_clip_breaking_a_rule_is_refused_with_that_rules_status(
    sim: RunningSimulator, clip_host: ClipHost, name: str
) -> None:
    rule = SAMPLE_CLIPS[name].breaks
    assert rule is not None

    body = kling_envelope(_post_url(sim, clip_host.url(name)), 0)

    assert body["data"]["status"] == RULE_STATUS[rule]
    assert body["data"]["status"] != 0
    assert "session_id" not in body["data"]
    assert f"{rule} rule" in body["message"]
    assert sim.stats()["by_outcome"]["clip_rejected"] == 1
    assert sim.stats()["sessions_opened"] == 0


def test_rule_statuses_are_distinct_and_non_zero() -> None:
    assert len(set(RULE_STATUS.values())) == len(RULE_STATUS)
    assert 0 not in RULE_STATUS.values()


def test_a_server_without_range_support_is_downloaded_whole(
    sim: RunningSimulator, clip_host: ClipHost
) -> None:
    data = success_data(_post_url(sim, clip_host.url("valid_mov", ranged=False)))

    assert (data["width"], data["height"], data["fps"]) == (720, 1280, 24)


def test_ranged_reads_fetch_only_the_parts_the_probe_needs(
    sim: RunningSimulator, clip_host: ClipHost
) -> None:
    before = clip_host.bytes_served(PADDED_NAME)

    data = success_data(_post_url(sim, clip_host.url(PADDED_NAME)))

    assert data["original_duration"] == 5000
    fetched = clip_host.bytes_served(PADDED_NAME) - before
    assert 0 < fetched < PADDING_BYTES // 4
    assert any(r is not None and s == 206 for p, r, s, _ in clip_host.served if PADDED_NAME in p)


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/expired/clip.mp4?X-Amz-Signature=abc", "HTTP 403"), ("/clips/missing.mp4", "HTTP 404")],
)
def test_an_unreadable_url_is_an_invalid_parameter(
    sim: RunningSimulator, clip_host: ClipHost, path: str, reason: str
) -> None:
    body = kling_envelope(_post_url(sim, clip_host.base_url + path), 1201)

    assert "video_url could not be downloaded" in body["message"]
    assert reason in body["message"]


def test_an_unreachable_host_is_an_invalid_parameter(sim: RunningSimulator) -> None:
    body = kling_envelope(_post_url(sim, "http://127.0.0.1:9/clip.mp4"), 1201)

    assert "video_url could not be downloaded" in body["message"]


def test_a_presigned_url_is_counted_without_its_query_string(
    sim: RunningSimulator, clip_host: ClipHost
) -> None:
    for signature in ("a", "b"):
        _post_url(sim, clip_host.url("valid_mp4", query=f"X-Amz-Signature={signature}"))

    assert sim.stats()["calls_per_video"] == {clip_host.url("valid_mp4"): 2}


def test_normalized_video_points_at_the_sessions_clip(
    sim: RunningSimulator, clip_host: ClipHost
) -> None:
    data = success_data(_post_url(sim, clip_host.url("valid_mp4")))

    response = requests.get(data["normalized_video"], timeout=10)

    assert response.status_code == 200
    assert response.content == clip_host.files["valid_mp4.mp4"]
