"""A dry account is not hammered: once its resource pack runs out (1102), the pause holds
fleet-wide within one round of calls, and unpinned jobs go on elsewhere.

Real pipelines call the simulator over HTTP: two worker processes sharing breakers and limiters
in one Redis, and, for the in-process breaker, threads of one process. The first 1102 comes while
many jobs wait for the account's slots; the pause must stop those waiting calls too, not only the
ones that choose an account later.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from simulator.samples import SAMPLE_CLIPS
from simulator.testing import RunningSimulator
from tests.services import PUBLIC_BUCKET
from tests.worker.coordination.dry_worker import Outcomes, jobs, pipeline, run_all

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("dry_worker.py")
#: A Redis database of this test's own; its keys are deleted after it.
DATABASE = 11
PROCESSES = 2
THREADS = 12
#: The dry account's fleet-wide cap: the most calls that can be in flight at its first 1102.
CAP = 4
#: Units of the dry account's pack: it runs out while both processes queue calls on it.
PACK_UNITS = 12
PINNED_PER_PROCESS = 30
UNPINNED_PER_PROCESS = 10
#: Far longer than the test: no pause ends, so no probe call is allowed.
OPEN_S = 60.0
PROBES_ALLOWED = 0


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def state_url(redis_url: str, run_id: str) -> Iterator[str]:
    url = f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"
    yield url
    client = redis.Redis.from_url(url)
    found = list(client.scan_iter(f"*{run_id}*"))
    if found:
        client.delete(*found)
    client.close()


@dataclass(frozen=True)
class Fleet:
    """The accounts of a test: ``dry`` runs out of its pack, ``wet`` never does."""

    dry: str
    wet: str
    accounts_file: Path
    clip: str


@pytest.fixture
def fleet(sim: RunningSimulator, s3_endpoint: str, run_id: str, tmp_path: Path) -> Fleet:
    """An account whose pack pays for 12 units, capped at 4 calls fleet-wide, and a second
    account with an endless pack; every call takes 100 ms."""
    dry, wet = f"dry-{run_id}", f"wet-{run_id}"
    keys = {dry: f"sk-dry-{run_id}", wet: f"sk-wet-{run_id}"}
    sim.put_account(dry, api_key=keys[dry], balance_units=PACK_UNITS)
    sim.put_account(wet, api_key=keys[wet])
    sim.set_faults(latency_ms=100)
    path = tmp_path / "accounts.toml"
    path.write_text(
        "".join(
            f'[[accounts]]\nname = "{name}"\napi_key = "{key}"\nmax_concurrency = {CAP}\n\n'
            for name, key in keys.items()
        )
    )
    clip = f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/{SAMPLE_CLIPS['valid_mp4'].filename}"
    return Fleet(dry, wet, path, clip)


def start_worker(*options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def run_processes(options: tuple[str, ...]) -> Outcomes:
    """Start PROCESSES workers at once (each built its pipeline first); every job's outcome."""
    workers = [start_worker(*options) for _ in range(PROCESSES)]
    try:
        return _outcomes(workers)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()


def _outcomes(workers: list[subprocess.Popen[str]]) -> Outcomes:
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    return [row for output in outputs for row in json.loads(output.strip().splitlines()[-1])]


def assert_only_the_calls_in_flight_met_the_dry_pack(
    sim: RunningSimulator, fleet: Fleet, ran: Outcomes, *, pinned_jobs: int, unpinned_jobs: int
) -> None:
    # The pack ran out, and after the first 1102 only the calls already in flight (at most the
    # cap) were answered 1102: every other call stopped before reaching the API.
    seen = sim.stats()["accounts"]
    dry, wet = seen[fleet.dry], seen[fleet.wet]
    assert dry["balance_units"] == 0
    assert 1 <= dry["by_code"].get("1102", 0) <= CAP + PROBES_ALLOWED, dry["by_code"]
    assert int(dry["peak_in_flight"]) <= CAP
    # Every pinned job the pack did not pay for failed as account_blocked...
    pinned = Counter((status, error) for kind, status, error, _ in ran if kind == "pinned")
    assert set(pinned) == {("succeeded", None), ("failed", "account_blocked")}
    assert pinned.total() == pinned_jobs
    # ...and every unpinned job succeeded, the ones the pause met on the other account.
    unpinned = [(status, account) for kind, status, _, account in ran if kind == "unpinned"]
    assert len(unpinned) == unpinned_jobs
    assert {status for status, _ in unpinned} == {"succeeded"}
    on_dry = sum(account == fleet.dry for _, account in unpinned)
    assert dry["sessions_opened"] == pinned["succeeded", None] + on_dry
    assert wet["sessions_opened"] == sum(account == fleet.wet for _, account in unpinned) > 0


@pytest.mark.redis
def test_after_the_first_1102_only_the_calls_in_flight_reach_the_dry_account_fleet_wide(
    sim: RunningSimulator, fleet: Fleet, state_url: str
) -> None:
    # Given the two accounts, shared in Redis by two worker processes of 12 threads each
    options = (
        *("--redis-url", state_url, "--accounts-file", str(fleet.accounts_file)),
        *("--base-url", f"{sim.base_url}/kling", "--open-s", str(OPEN_S)),
        *("--pinned-to", fleet.dry, "--pinned", str(PINNED_PER_PROCESS)),
        *("--url", fleet.clip, "--unpinned", str(UNPINNED_PER_PROCESS), "--threads", str(THREADS)),
    )

    # When each runs 30 jobs pinned to the dry account and 10 unpinned jobs
    ran = run_processes(options)

    # Then
    assert_only_the_calls_in_flight_met_the_dry_pack(
        sim,
        fleet,
        ran,
        pinned_jobs=PROCESSES * PINNED_PER_PROCESS,
        unpinned_jobs=PROCESSES * UNPINNED_PER_PROCESS,
    )


def test_after_the_first_1102_only_the_calls_in_flight_reach_the_dry_account_in_process(
    sim: RunningSimulator, fleet: Fleet
) -> None:
    # Given the two accounts on the in-process breakers and limiters (no Redis), 24 threads
    threads = PROCESSES * THREADS
    runner = pipeline(
        base_url=f"{sim.base_url}/kling",
        accounts_file=fleet.accounts_file,
        open_s=OPEN_S,
        threads=threads,
        redis_url=None,
    )
    queued = jobs(
        pinned_to=fleet.dry,
        pinned=PROCESSES * PINNED_PER_PROCESS,
        url=fleet.clip,
        unpinned=PROCESSES * UNPINNED_PER_PROCESS,
    )

    # When they run 60 jobs pinned to the dry account and 20 unpinned jobs
    try:
        ran = run_all(runner, queued, threads)
    finally:
        runner.accounts.close()

    # Then
    assert_only_the_calls_in_flight_met_the_dry_pack(
        sim,
        fleet,
        ran,
        pinned_jobs=PROCESSES * PINNED_PER_PROCESS,
        unpinned_jobs=PROCESSES * UNPINNED_PER_PROCESS,
    )
