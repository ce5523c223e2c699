"""The pre-flight's deadline bounds the whole probe in wall-clock time: a host that trickles
bytes or stalls mid-answer is cut off at it, under threads and under gevent, and the probe ends
as a timeout does (UpstreamDown, retried by the pipeline). Each socket read is bounded too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from contract.clip_rules import COMETAPI_RULES
from contract.results import VideoFacts
from tests.worker.preflight.hosts import MisbehavingHost, misbehaving_host
from worker.errors import UpstreamDown
from worker.preflight import Preflight, ReadLimits
from worker.preflight.deadline import Deadline, Watchdog, adopt_socket

ROOT = Path(__file__).resolve().parents[3]
#: Deadlines are 1 s; a probe must end well within this on a loaded machine, while the host
#: would trickle its answer for hours.
ENDS_WITHIN_S = 8.0
STUCK_ROUTES = ["trickle-head", "trickle-body", "stall-body"]


@pytest.fixture(scope="module")
def host(corpus: dict[str, bytes]) -> Iterator[MisbehavingHost]:
    with misbehaving_host(corpus["faststart.mp4"]) as running:
        yield running


def impatient(*, timeout_s: float = 1.0, read_timeout_s: float = 30.0) -> Preflight:
    """A pre-flight with a 1 s deadline whose socket reads may each wait 30 s."""
    limits = ReadLimits(timeout_s=timeout_s, read_timeout_s=read_timeout_s)
    return Preflight(rules=COMETAPI_RULES, pool_size=2, limits=limits)


def probe_bounded(preflight: Preflight, url: str) -> tuple[object, float]:
    """The outcome of one probe (its facts or the exception) and its wall time; fails the test
    if the probe is still running after ``ENDS_WITHIN_S`` (the thread is left to the host's
    shutdown)."""
    outcome: list[object] = []

    def probe() -> None:
        try:
            outcome.append(preflight.check(url, where="the clip"))
        except Exception as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(ENDS_WITHIN_S)
    elapsed_s = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"the probe was still reading after {ENDS_WITHIN_S:g} s")
    return outcome[0], elapsed_s


def test_the_watchdog_wakes_a_read_blocked_past_the_deadline() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(ENDS_WITHIN_S)  # a failure of the watchdog ends in a timeout, not a hang
    deadline = Watchdog().arm(0.2)

    with deadline.request():
        adopt_socket(ours)
        received = ours.recv(1)  # nothing is ever sent: only the cut ends this

    assert received == b""
    assert deadline.expired
    theirs.close()
    ours.close()


def test_a_deadline_cuts_only_the_request_in_flight_not_sockets_it_used_before() -> None:
    deadline = Deadline(60.0)
    earlier, earlier_peer = socket.socketpair()  # back in the pool: another probe's now
    current, current_peer = socket.socketpair()
    with deadline.request():
        adopt_socket(earlier)

    with deadline.request():
        adopt_socket(current)
        deadline.expire()
        cut = current.recv(1)
    earlier_peer.sendall(b"x")

    assert cut == b""
    assert earlier.recv(1) == b"x"
    for sock in (earlier, earlier_peer, current, current_peer):
        sock.close()


@pytest.mark.parametrize("route", STUCK_ROUTES)
def test_a_one_second_deadline_ends_a_probe_the_host_would_hold_for_hours(
    host: MisbehavingHost, route: str
) -> None:
    outcome, elapsed_s = probe_bounded(impatient(), host.url(route))

    assert isinstance(outcome, UpstreamDown), outcome
    assert outcome.message == "clip host unavailable for the clip: no answer within 1 s"
    assert elapsed_s < ENDS_WITHIN_S


def test_a_stalled_read_times_out_on_its_own_long_before_the_deadline(
    host: MisbehavingHost,
) -> None:
    outcome, _ = probe_bounded(
        impatient(timeout_s=60.0, read_timeout_s=0.5), host.url("stall-body")
    )

    assert isinstance(outcome, UpstreamDown), outcome
    assert outcome.message == "clip host unavailable for the clip: the clip host timed out"


def test_after_a_cut_the_same_preflight_reads_a_good_host_normally(host: MisbehavingHost) -> None:
    preflight = impatient(timeout_s=2.0)
    stuck, _ = probe_bounded(preflight, host.url("trickle-body"))

    facts, _ = probe_bounded(preflight, host.url("clip"))

    assert isinstance(stuck, UpstreamDown)
    assert isinstance(facts, VideoFacts), facts
    assert facts.duration_ms == 5000


def test_cutting_the_probes_past_their_deadline_leaves_the_others_alone(
    host: MisbehavingHost,
) -> None:
    preflight = impatient(timeout_s=2.0)  # one pool: connections pass from probe to probe
    stuck_ended = threading.Event()

    def outcome(url: str) -> object:
        try:
            return preflight.check(url, where="the clip")
        except UpstreamDown as exc:
            return exc

    def good_probes_until_the_stuck_end() -> list[object]:
        outcomes = []
        while not stuck_ended.wait(0.02):
            outcomes.append(outcome(host.url("clip")))
        return outcomes

    with ThreadPoolExecutor(len(STUCK_ROUTES) + 3) as pool:
        good = [pool.submit(good_probes_until_the_stuck_end) for _ in range(3)]
        stuck = [pool.submit(outcome, host.url(route)) for route in STUCK_ROUTES]
        stuck_outcomes = [future.result(timeout=30) for future in stuck]
        stuck_ended.set()
        good_outcomes = [each for future in good for each in future.result(timeout=30)]

    assert all(isinstance(each, UpstreamDown) for each in stuck_outcomes), stuck_outcomes
    assert good_outcomes
    assert all(isinstance(each, VideoFacts) for each in good_outcomes), good_outcomes


#: One probe in a fresh interpreter monkey-patched by gevent, as ``kling-worker`` runs.
GEVENT_PROBE = """
from gevent import monkey

monkey.patch_all()

import json, sys, time

from contract.clip_rules import COMETAPI_RULES
from worker.errors import UpstreamDown
from worker.preflight import Preflight, ReadLimits
from worker.preflight.deadline import Deadline, Watchdog, adopt_socket

limits = ReadLimits(timeout_s=1.0, read_timeout_s=30.0)
preflight = Preflight(rules=COMETAPI_RULES, pool_size=2, limits=limits)
started = time.monotonic()
try:
    preflight.check(sys.argv[1], where="the clip")
    outcome = "read to the end"
except UpstreamDown as exc:
    outcome = exc.message
print(json.dumps({"outcome": outcome, "elapsed_s": time.monotonic() - started}))
"""


@pytest.mark.parametrize("route", ["trickle-body", "stall-body"])
def test_under_gevent_the_deadline_cuts_the_host_off_too(host: MisbehavingHost, route: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", GEVENT_PROBE, host.url(route)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["outcome"] == "clip host unavailable for the clip: no answer within 1 s"
    assert report["elapsed_s"] < ENDS_WITHIN_S
