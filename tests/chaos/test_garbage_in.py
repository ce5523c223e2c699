"""Garbage on the job queue: every message ends in one result (``succeeded`` for a valid job,
``invalid_job`` for a broken one) or one dead letter, and the worker carries on."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.testing import RunningSimulator
from tests.chaos.garbage import (
    RawMessage,
    deep_metadata_body,
    poison_body,
    surrogate_body,
    task_headers,
    valid_message,
)
from tests.chaos.scenarios import REQUEUE_LOOP_AFTER, Run, garbage_in
from tests.chaos.secrets import CHAOS_API_KEY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

#: Fuzzed messages per CI run (derandomized: the same ones every run).
CI_EXAMPLES = 300


def hostile(kind: str, body: bytes) -> RawMessage:
    return RawMessage(kind, body, "application/json", "utf-8", task_headers())


def not_one_outcome(run: Run) -> dict[int, tuple[int, str]]:
    """Messages that ended in no outcome or in more than one, with what they were."""
    outcomes = run.evidence["outcomes_by_seq"]
    return {
        seq: (outcomes[seq], message.describe())
        for seq, message in run.evidence["sent"].items()
        if outcomes[seq] != 1
    }


def handed_back(run: Run) -> str:
    return f"handed back to the queue: {dict(run.evidence['handed_back']) or 'never'}"


def worker_trouble(run: Run) -> str:
    """The exits of the run's workers (each with the end of its log), for a failure message."""
    return "\n\n".join(run.evidence["worker_exits"]) or "(no worker exited)"


def test_fuzzed_messages_each_end_in_one_result_or_one_dead_letter(
    chaos_sim: RunningSimulator, workdir: Path
) -> None:
    # Given 300 fuzzed messages (malformed jobs, pickle, invalid UTF-8, random bytes and JSON,
    # missing or mistyped headers, unknown tasks, huge metadata, bodies nested past any
    # decoder, numbers out of range, lone surrogates, and valid jobs among them), then one
    # valid job:
    run = garbage_in(chaos_sim, workdir, CHAOS_API_KEY, examples=CI_EXAMPLES)
    sent = run.evidence["sent"]
    valid_seqs = run.evidence["valid_seqs"]
    assert valid_seqs, "the fuzzer sent no valid job"
    assert any(m.kind.startswith("hostile/") for m in sent.values()), "no hostile message"

    # Then no worker exited and no message went round in a loop...
    assert not run.evidence["worker_exits"], worker_trouble(run)
    loops = {k: n for k, n in run.evidence["handed_back"].items() if n > REQUEUE_LOOP_AFTER}
    assert not loops, f"messages handed back again and again: {loops}"
    # ...each message has exactly one outcome...
    wrong = not_one_outcome(run)
    assert not wrong, f"messages without exactly one outcome: {wrong}; {handed_back(run)}"
    assert run.evidence["dead"], "the fuzzer sent nothing that needed a dead letter"
    # ...each valid job succeeded, every other result is an invalid_job failure, and only the
    # valid jobs reached the API, once each...
    for job_id, result in run.evidence["garbage_results"].items():
        seq = int(job_id.removeprefix("fz-"))
        if seq in valid_seqs:
            assert result.status == "succeeded", (result, sent[seq].describe())
        else:
            assert result.error is not None, (result, sent[seq].describe())
            assert result.error.type == "invalid_job", (result, sent[seq].describe())
    assert run.stats["calls"] == len(valid_seqs) + 1
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


def test_a_body_nested_1200_deep_is_dead_lettered_and_the_worker_lives_on(
    chaos_sim: RunningSimulator, workdir: Path
) -> None:
    # Given the poison body [[],{"job":[[[…1,200 deep…]]]},null] (it once killed every worker
    # that took it, one after the other), then a valid job:
    poison = hostile("poison 1200 deep", poison_body(1200))

    run = garbage_in(chaos_sim, workdir, CHAOS_API_KEY, examples=0, fixed=[poison, valid_message()])

    # Then the poison is one dead letter, no worker exited, and the valid job succeeded.
    assert not run.evidence["worker_exits"], worker_trouble(run)
    assert 0 in run.evidence["dead"]
    wrong = not_one_outcome(run)
    assert not wrong, f"messages without exactly one outcome: {wrong}; {handed_back(run)}"
    assert run.evidence["garbage_results"]["fz-1"].status == "succeeded"
    assert run.evidence["valid"] is not None
    assert run.evidence["valid"].status == "succeeded"


def test_metadata_nested_260_deep_gets_one_invalid_job_and_the_next_job_its_result(
    chaos_sim: RunningSimulator, workdir: Path
) -> None:
    # Given a job with a valid job id whose metadata nests 260 levels (its invalid_job result
    # once could not be serialized: the job came back forever and broke the result publisher
    # for every other job), then a valid job, on the same worker:
    deep = hostile("metadata 260 deep", deep_metadata_body(260))

    run = garbage_in(chaos_sim, workdir, CHAOS_API_KEY, examples=0, fixed=[deep, valid_message()])

    # Then the job has exactly one result, invalid_job, published the first time...
    assert not run.evidence["worker_exits"], worker_trouble(run)
    assert run.evidence["outcomes_by_seq"][0] == 1, handed_back(run)
    result = run.evidence["garbage_results"]["fz-0"]
    assert result.error is not None
    assert result.error.type == "invalid_job"
    assert run.evidence["handed_back"]["fz-0"] == 0
    # ...and the valid jobs after it got theirs from the same worker.
    assert run.evidence["garbage_results"]["fz-1"].status == "succeeded"
    assert run.evidence["valid"] is not None
    assert run.evidence["valid"].status == "succeeded"
    assert run.evidence["workers_up_at_end"] == [True]
    assert run.evidence["left_on_queue"] == 0


def test_a_second_worker_started_after_a_poison_message_stays_up(
    chaos_sim: RunningSimulator, workdir: Path
) -> None:
    # Given a poison message on the queue, and a second worker started after it:
    poison = hostile("poison 1200 deep", poison_body(1200))

    run = garbage_in(chaos_sim, workdir, CHAOS_API_KEY, examples=0, fixed=[poison], workers=2)

    # Then both workers are up at the end, none ever exited, and the poison is one dead letter.
    assert not run.evidence["worker_exits"], worker_trouble(run)
    assert run.evidence["workers_up_at_end"] == [True, True]
    assert list(run.evidence["dead"]) == [0]
    assert run.evidence["valid"] is not None
    assert run.evidence["valid"].status == "succeeded"


def test_lone_surrogates_in_echoed_fields_get_one_invalid_job_each(
    chaos_sim: RunningSimulator, workdir: Path
) -> None:
    # Given jobs with a lone surrogate ("\ud800", which no UTF-8 text holds) in fields an
    # invalid_job result echoes (the fuzzer found one handed back 2,199 times in a minute: its
    # result could not be encoded), then a valid job:
    places = ["task_id", "metadata"]
    messages = [hostile(f"lone surrogate in {place}", surrogate_body(place)) for place in places]

    run = garbage_in(
        chaos_sim, workdir, CHAOS_API_KEY, examples=0, fixed=[*messages, valid_message()]
    )

    # Then each has exactly one result, invalid_job, published the first time...
    assert not run.evidence["worker_exits"], worker_trouble(run)
    wrong = not_one_outcome(run)
    assert not wrong, f"messages without exactly one outcome: {wrong}; {handed_back(run)}"
    for seq in range(len(places)):
        result = run.evidence["garbage_results"][f"fz-{seq}"]
        assert result.error is not None
        assert result.error.type == "invalid_job"
        assert run.evidence["handed_back"][f"fz-{seq}"] == 0
    # ...and the valid job after them succeeded.
    assert run.evidence["garbage_results"][f"fz-{len(places)}"].status == "succeeded"
