"""`kling-api-sim` as a subprocess: it prints its base URL and answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.simulator.kling_shapes import kling_envelope, success_data

DEMO = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}
KEY = "env-key-secret"
SCRIPT = Path(sys.executable).parent / "kling-api-sim"


@pytest.fixture
def cli_sim() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "KLING_API_KEY": KEY}
    process = subprocess.Popen(
        [str(SCRIPT), "--port", "0", "--latency-ms", "1", "--max-concurrency", "4", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"kling-api-sim serving at (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        yield match.group(1), process
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_the_cli_serves_with_credentials_from_the_environment(
    cli_sim: tuple[str, subprocess.Popen[str]],
) -> None:
    base_url, _ = cli_sim
    url = base_url + "/kling/v1/videos/multi-elements/init-selection"

    success_data(
        requests.post(
            url, json=DEMO, headers={"Authorization": "Bearer env-key-secret"}, timeout=10
        )
    )
    kling_envelope(
        requests.post(url, json=DEMO, headers={"Authorization": "Bearer other"}, timeout=10), 1002
    )
    faults = requests.get(base_url + "/_sim/faults", timeout=10).json()
    assert (faults["max_concurrency"], faults["seed"], faults["latency_ms"]) == (4, 3, 1.0)


def test_the_cli_never_prints_the_secret(cli_sim: tuple[str, subprocess.Popen[str]]) -> None:
    _, process = cli_sim
    process.terminate()
    out, err = process.communicate(timeout=10)

    assert KEY not in out + err


def test_the_cli_refuses_a_bad_flag() -> None:
    result = subprocess.run(
        [str(SCRIPT), "--fail-rate", "3"], capture_output=True, text=True, timeout=30, check=False
    )

    assert result.returncode == 2
    assert "fail_rate" in result.stderr
