"""Garbage on the job queue: every message ends in an ``invalid_job`` result or a dead letter,
and the worker carries on."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.testing import RunningSimulator
from tests.chaos.garbage import RawMessage, task_headers
from tests.chaos.scenarios import garbage_in
from tests.chaos.secrets import CHAOS_API_KEY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

#: Fuzzed messages per CI run (derandomized: the same ones every run).
CI_EXAMPLES = 300


def test_fuzzed_messages_each_end_in_one_result_or_one_dead_letter(
    chaos_sim: RunningSimulator, workdir: Path
) -> None:
    # Given 300 fuzzed messages (malformed jobs, pickle, invalid UTF-8, random bytes and JSON,
    # missing or mistyped headers, unknown tasks, huge metadata) and then one valid job:
    run = garbage_in(chaos_sim, workdir, CHAOS_API_KEY, examples=CI_EXAMPLES)
    sent = run.evidence["sent"]
    outcomes = run.evidence["outcomes_by_seq"]

    # Then each message has exactly one outcome...
    wrong = {
        seq: (outcomes[seq], message.describe())
        for seq, message in sent.items()
        if outcomes[seq] != 1
    }
    assert not wrong, f"messages without exactly one outcome: {wrong}"
    assert run.evidence["dead"], "the fuzzer sent nothing that needed a dead letter"
    # ...every result is an invalid_job failure, and no message reached the API...
    for result in run.evidence["garbage_results"].values():
        assert result.error is not None
        assert result.error.type == "invalid_job"
    assert run.stats["calls"] == 1
    # ...and the worker is up, the queue empty, and the valid job sent last succeeded.
    assert run.evidence["valid"] is not None
    assert run.evidence["valid"].status == "succeeded"
    assert run.evidence["left_on_queue"] == 0


#: Task bodies ``[args, kwargs, embed]`` of the wrong types, each found lost by the fuzzer.
WRONG_SHAPES = ["[[], null, {}]", "[[], [], {}]", '[[], "s", {}]', "[null, {}, {}]"]
WRONG_SHAPES += ['[[], {}, "x"]', '[[], {"job": {}}, 1.5]']


def test_task_bodies_of_the_wrong_types_are_not_lost(
    chaos_sim: RunningSimulator, workdir: Path
) -> None:
    messages = [
        RawMessage(f"shape {body}", body.encode(), "application/json", "utf-8", task_headers())
        for body in WRONG_SHAPES
    ]

    run = garbage_in(chaos_sim, workdir, CHAOS_API_KEY, examples=0, fixed=messages)

    lost = [
        message.describe()
        for seq, message in run.evidence["sent"].items()
        if run.evidence["outcomes_by_seq"][seq] != 1
    ]
    assert not lost, f"lost: {lost}"
