"""JSON read with bounds: what a queue or an HTTP peer sends is refused with a ValueError when
it is too deep, too large or out of range, before anything recurses into it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.bounded_json import MAX_DEPTH, UnreadableJson, depth_exceeds, loads
from contract.errors import InvalidJobError
from contract.jobs import S3Object, parse_job

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)  # fmt: skip


@given(json_values)
def test_any_json_within_the_bounds_reads_as_json_does(value: object) -> None:
    text = json.dumps(value)
    assert loads(text) == json.loads(text)


@given(st.text(alphabet='[]{}"\\ ', max_size=200))
def test_brackets_inside_strings_are_text_not_nesting(text: str) -> None:
    body = json.dumps({"s": text})
    assert loads(body) == {"s": text}


def test_nesting_one_past_the_bound_is_refused_and_at_the_bound_accepted() -> None:
    at, past = "[" * MAX_DEPTH + "]" * MAX_DEPTH, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert depth_exceeds(loads(at)) is False
    with pytest.raises(UnreadableJson, match="nested deeper"):
        loads(past)


def test_a_body_deep_enough_to_crash_json_is_refused_not_recursed_into() -> None:
    with pytest.raises(UnreadableJson):
        loads("[" * 100_000)


@pytest.mark.parametrize("body", ["1e999", "-1e999", "NaN", "Infinity", "1" * 400])
def test_numbers_no_float_can_hold_are_refused(body: str) -> None:
    with pytest.raises(UnreadableJson):
        loads(f'{{"n": {body}}}')


def test_a_body_over_its_size_is_refused() -> None:
    with pytest.raises(UnreadableJson, match="more than the 10 accepted"):
        loads(b'{"k": "' + b"x" * 10 + b'"}', max_bytes=10)


def test_depth_exceeds_walks_without_recursion() -> None:
    value: list[object] = []
    for _ in range(50_000):
        value = [value]
    assert depth_exceeds(value)
    assert not depth_exceeds({"a": [1, {"b": 2}]}, max_depth=3)
    assert depth_exceeds({"a": [1, {"b": []}]}, max_depth=3)


def test_a_job_nested_too_deeply_is_invalid_before_anything_recurses() -> None:
    metadata: dict[str, object] = {}
    for _ in range(1_200):
        metadata = {"n": metadata}
    job = {"job_id": "j-1", "source": {"kind": "kling", "video_id": "v", "task_id": "t"}}
    with pytest.raises(InvalidJobError, match="deeper than 64 levels"):
        parse_job({**job, "metadata": metadata})


@pytest.mark.parametrize("bucket", ["bad bucket!", "a/b", "x" * 64, "ab"])
def test_a_bucket_name_s3_cannot_hold_is_refused(bucket: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's validation error
        S3Object(bucket=bucket, key="clips/a.mp4")
