"""Which task messages are dead-lettered on receipt, and the reason each one carries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kombu.message import Message

from worker.dead_letters import task_shape_problem

TASK_HEADERS = {"task": "kling.init_selection", "id": "job-1"}
GOOD_BODY = [[], {"job": {"job_id": "job-1"}}, {"callbacks": None}]


def message(
    body: Any, *, content_type: str | None = "application/json", headers: Any = TASK_HEADERS
) -> Message:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Message(body=raw, content_type=content_type, headers=headers)


def test_a_well_formed_json_task_is_left_to_celery() -> None:
    assert task_shape_problem(message(GOOD_BODY)) is None


def test_a_body_with_no_embed_part_is_still_well_formed() -> None:
    assert task_shape_problem(message([[], {"job": {}}, None])) is None


def test_a_message_that_is_not_a_task_is_left_to_celery() -> None:
    # Celery's own hooks dead-letter those (unknown message, unknown task).
    assert task_shape_problem(message(GOOD_BODY, headers={})) is None


@pytest.mark.parametrize("content_type", ["application/x-python-serialize", "text/plain", None])
def test_any_content_type_but_json_is_refused_before_decoding(content_type: str | None) -> None:
    reason = task_shape_problem(message(b"\x80\x04K\x01.", content_type=content_type))
    assert reason is not None
    assert "workers accept JSON only" in reason


def test_a_task_without_an_id_is_refused() -> None:
    reason = task_shape_problem(message(GOOD_BODY, headers={"task": "kling.init_selection"}))
    assert reason == "malformed task message: no task id"


def test_a_body_that_is_not_json_is_refused_with_the_decoder_error() -> None:
    reason = task_shape_problem(message(b"{not json"))
    assert reason is not None
    assert reason.startswith("cannot decode the message: not JSON: Expecting property name")


# A body nested past the bound killed the worker with a RecursionError (and then the next).
POISON = b'[[],{"job":' + b"[" * 1200 + b"1" + b"]" * 1200 + b"},null]"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (POISON, "nested deeper than 512 levels"),
        (b'[[],{"job":{"n":1e999}},null]', "out of range"),
        (b'[[],{"job":{"n":NaN}},null]', "NaN is not a JSON number"),
        (b"[[],{},null]" + b" " * (1024 * 1024), "more than the 1048576 accepted"),
    ],
    ids=["1,200 deep", "1e999", "NaN", "over 1 MiB"],
)
def test_a_body_beyond_the_bounds_is_refused_without_decoding_it(body: bytes, reason: str) -> None:
    problem = task_shape_problem(message(body))
    assert problem is not None
    assert problem.startswith("cannot decode the message")
    assert reason in problem


def test_a_body_that_is_not_utf8_is_refused() -> None:
    reason = task_shape_problem(message(b"\xff\xfe[]"))
    assert reason is not None
    assert reason.startswith("cannot decode the message")


@pytest.mark.parametrize(
    "body",
    [
        {"job": {}},
        [[], {}],
        [{}, {}, None],
        [[], [], None],
        [[], {}, []],
        "just a string",
    ],
)
def test_a_body_of_the_wrong_shape_is_refused(body: Any) -> None:
    assert task_shape_problem(message(body)) == (
        "malformed task message: body is not [args, kwargs, embed]"
    )
