"""A rule is broken only when every reading of its value breaks it; what the probe could not
read is not judged at all."""

from __future__ import annotations

import pytest

from contract.clip_rules import COMETAPI_RULES
from worker.preflight.probe import Measurement


def measured(**changes: object) -> Measurement:
    values: dict[str, object] = {
        "container": "mp4",
        "durations_ms": (5000,),
        "sizes": ((1280, 720),),
        "rates": (30.0,),
        "fps": 30.0,
        "total_frames": 150,
    }
    values.update(changes)
    return Measurement(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({}, None),
        # The video track is 5.4 s, the container (a longer audio track) 5.6 s: one reading passes.
        ({"durations_ms": (5400, 5600)}, None),
        ({"durations_ms": (1500, 1600)}, "duration"),
        ({"durations_ms": ()}, None),
        # Anamorphic 1440x1080: coded and displayed sizes both pass; 640x480 shown 854x480 not.
        ({"sizes": ((1440, 1080), (1920, 1080))}, None),
        ({"sizes": ((640, 480), (854, 480))}, "dimensions"),
        ({"sizes": ((700, 1080), (933, 1080))}, None),
        ({"sizes": ()}, None),
        # A variable frame rate, or an unknown average: no fps verdict.
        ({"rates": (), "fps": 25.0}, None),
        ({"rates": (25.0,), "fps": 25.0}, "fps"),
        # An ISO BMFF brand that is neither MP4's nor MOV's: the container is the API's to judge,
        # the other rules are still ours.
        ({"container": None}, None),
        ({"container": None, "durations_ms": (6000,)}, "duration"),
        ({"container": "avi"}, "container"),
    ],
)
def test_a_rule_is_broken_only_when_every_reading_breaks_it(
    changes: dict[str, object], rule: str | None
) -> None:
    broken = measured(**changes).broken_rule(COMETAPI_RULES)

    assert (broken.rule if broken else None) == rule


def test_the_first_reading_is_the_one_reported() -> None:
    facts = measured(durations_ms=(5400, 5600), sizes=((1440, 1080), (1920, 1080))).video_facts()

    assert (facts.duration_ms, facts.width, facts.height) == (5400, 1440, 1080)
    assert (facts.fps, facts.total_frames) == (30.0, 150)
