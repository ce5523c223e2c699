"""The clip rules shared by the simulator and the worker's pre-flight."""

from __future__ import annotations

import pytest

from contract.clip_rules import (
    COMETAPI_RULES,
    KLING_RULES,
    ClipFacts,
    check_clip,
    container_of,
    looks_like_iso_bmff,
    rules_for,
)
from simulator.clip_rules import RULE_STATUS
from simulator.clip_rules import check_clip as simulator_check


def facts(**changes: object) -> ClipFacts:
    values: dict[str, object] = {
        "container": "mp4",
        "duration_ms": 5000,
        "width": 1280,
        "height": 720,
        "fps": 30.0,
        "total_frames": 150,
    }
    values.update(changes)
    return ClipFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({}, None),
        ({"container": "matroska,webm"}, "container"),
        ({"duration_ms": 1999}, "duration"),
        ({"duration_ms": 6000}, "duration"),
        ({"duration_ms": 10_501}, "duration"),
        ({"width": 719}, "dimensions"),
        ({"height": 2161}, "dimensions"),
        ({"fps": 25.0}, "fps"),
        ({"fps": 29.97}, "fps"),
        ({"width": 720, "height": 2160, "duration_ms": 2000, "fps": 60.0}, None),
        ({"duration_ms": 10_500, "fps": 24.0}, None),
    ],
)
def test_each_rule_and_its_edges(changes: dict[str, object], rule: str | None) -> None:
    broken = check_clip(facts(**changes))

    assert (broken.rule if broken else None) == rule


def test_kling_windows_are_narrower_than_cometapis() -> None:
    broken = check_clip(facts(duration_ms=5300), KLING_RULES)

    assert check_clip(facts(duration_ms=5300), COMETAPI_RULES) is None
    assert broken is not None
    assert broken.message == "duration rule: 5.3 s is outside 2-5 s and 7-10 s"


@pytest.mark.parametrize(
    ("name", "base_url", "expected"),
    [
        (None, "https://api.cometapi.com/kling", COMETAPI_RULES),
        (None, "https://api-singapore.klingai.com", KLING_RULES),
        (None, "https://api.klingai.com/", KLING_RULES),
        (None, "https://klingai.com.example.org", COMETAPI_RULES),
        ("kling", "https://api.cometapi.com/kling", KLING_RULES),
        ("cometapi", "https://api-singapore.klingai.com", COMETAPI_RULES),
    ],
)
def test_clip_rules_follow_the_setting_or_else_the_base_url(
    name: str | None, base_url: str, expected: object
) -> None:
    assert rules_for(name, base_url) == expected  # type: ignore[arg-type]


def test_the_simulator_answers_the_shared_rules_with_its_statuses() -> None:
    rejection = simulator_check(facts(fps=25.0))

    assert rejection is not None
    assert (rejection.rule, rejection.status) == ("fps", RULE_STATUS["fps"])
    assert rejection.message == "fps rule: 25 fps is not 24, 30 or 60"


@pytest.mark.parametrize(
    ("head", "container", "iso"),
    [
        (b"\x00\x00\x00\x20ftypisom", "mp4", True),
        (b"\x00\x00\x00\x14ftypqt  ", "mov", True),
        (b"\x00\x00\x00\x08wide", "mov", True),
        (b"\x00\x00\x00\x18ftyp3gp4", "3gp4", True),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81", "unknown", False),
        (b"This is a text", "unknown", False),
    ],
)
def test_containers_are_told_by_their_first_bytes(head: bytes, container: str, iso: bool) -> None:
    assert container_of(head) == container
    assert looks_like_iso_bmff(head) is iso
