"""Several accounts in one simulator: own keys, own parallel limit, a pack that runs out, billing
as numbers or strings, per-account stats, the admin API and ``--accounts-file``."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import requests

from simulator.accounts import SimAccount
from simulator.auth import Credentials
from simulator.testing import RunningSimulator
from tests.simulator.kling_shapes import kling_envelope, success_data

DEMO = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}
LONG = {"video_id": "kling-demo-video-2", "task_id": "kling-demo-task-2"}
MAIN_KEY, BACKUP_SECRET = "sk-sim-main-SECRET-1", "sk-sim-backup-SECRET-2-0123456789abcdef"
ACCOUNTS = (
    SimAccount("main", Credentials(api_key=MAIN_KEY), max_concurrency=2, balance_units=3),
    SimAccount(
        "backup",
        Credentials(access_key="ak-backup", secret_key=BACKUP_SECRET),
        billing_format="string",
    ),
)
SCRIPT = Path(sys.executable).parent / "kling-api-sim"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def backup_jwt() -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "ak-backup", "exp": now + 600, "nbf": now - 5}
    return bearer(jwt.encode(claims, BACKUP_SECRET, algorithm="HS256"))


@pytest.fixture
def accounts_sim(make_sim: Callable[..., RunningSimulator]) -> RunningSimulator:
    return make_sim(accounts=ACCOUNTS)


def call(sim: RunningSimulator, headers: dict[str, str], body: dict[str, str] = DEMO) -> Any:
    return requests.post(sim.kling_url, json=body, headers=headers, timeout=10)


def test_each_key_calls_as_its_account_and_unknown_keys_are_refused(
    accounts_sim: RunningSimulator,
) -> None:
    success_data(call(accounts_sim, bearer(MAIN_KEY)))
    success_data(call(accounts_sim, backup_jwt()))
    success_data(call(accounts_sim, backup_jwt()))
    kling_envelope(call(accounts_sim, bearer("sk-nobody")), 1002)

    accounts = accounts_sim.stats()["accounts"]
    # With accounts and no start-up credentials there is no open "default" account.
    assert set(accounts) == {"main", "backup"}
    assert (accounts["main"]["calls"], accounts["backup"]["calls"]) == (1, 2)
    assert accounts["backup"]["by_code"] == {"0": 2}


def test_billing_comes_as_numbers_or_strings_per_account(accounts_sim: RunningSimulator) -> None:
    numbers = success_data(call(accounts_sim, bearer(MAIN_KEY), LONG))
    strings = success_data(call(accounts_sim, backup_jwt()))

    assert numbers["final_unit_deduction"] == 2
    assert numbers["final_balance_deduction"] == {"quota": 2, "list_price": 0.28}
    assert strings["final_unit_deduction"] == "1"
    assert strings["final_balance_deduction"] == {"quota": "1", "list_price": "0.14"}


def test_mixed_billing_alternates_strings_and_numbers(accounts_sim: RunningSimulator) -> None:
    accounts_sim.update_account("main", billing_format="mixed")
    units = [
        success_data(call(accounts_sim, bearer(MAIN_KEY)))["final_unit_deduction"] for _ in "abc"
    ]
    assert units == ["1", 1, "1"]


def test_a_spent_pack_answers_1102_and_only_on_its_account(accounts_sim: RunningSimulator) -> None:
    success_data(call(accounts_sim, bearer(MAIN_KEY), LONG))  # 2 of 3 units
    success_data(call(accounts_sim, bearer(MAIN_KEY)))  # the last unit
    kling_envelope(call(accounts_sim, bearer(MAIN_KEY)), 1102)
    success_data(call(accounts_sim, backup_jwt()))

    main = accounts_sim.stats()["accounts"]["main"]
    assert (main["balance_units"], main["units_billed"], main["sessions_opened"]) == (0.0, 3.0, 2)
    assert main["by_code"] == {"0": 2, "1102": 1}
    assert accounts_sim.stats()["by_outcome"]["account_blocked"] == 1


def test_each_account_has_its_own_parallel_limit(accounts_sim: RunningSimulator) -> None:
    # Every admitted call holds its slot 0.3 s.
    accounts_sim.set_faults(slow_rate=1.0, slow_seconds=0.3)

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(headers: dict[str, str]) -> int:
                async with session.post(accounts_sim.kling_url, json=DEMO, headers=headers) as r:
                    return int((await r.json())["code"])

            main = [one(bearer(MAIN_KEY)) for _ in range(4)]
            backup = [one(backup_jwt()) for _ in range(4)]
            return await asyncio.gather(*main, *backup)

    codes = asyncio.run(burst())

    assert sorted(codes[:4]) == [0, 0, 1303, 1303]
    assert codes[4:] == [0, 0, 0, 0]
    accounts = accounts_sim.stats()["accounts"]
    assert accounts["main"]["by_code"] == {"0": 2, "1303": 2}
    assert accounts["backup"]["peak_in_flight"] == 4


def test_the_admin_api_adds_changes_and_lists_accounts_without_keys(
    accounts_sim: RunningSimulator,
) -> None:
    created = accounts_sim.put_account("extra", api_key="sk-extra-SECRET-3", max_concurrency=1)
    success_data(call(accounts_sim, bearer("sk-extra-SECRET-3")))
    accounts_sim.update_account("extra", balance_units=0)
    kling_envelope(call(accounts_sim, bearer("sk-extra-SECRET-3")), 1102)

    listed = requests.get(f"{accounts_sim.base_url}/_sim/accounts", timeout=10)
    assert created["auth"] == ["api_key"]
    assert [a["name"] for a in listed.json()] == ["main", "backup", "extra"]
    assert listed.json()[1]["auth"] == ["jwt"]
    for secret in (MAIN_KEY, BACKUP_SECRET, "sk-extra-SECRET-3"):
        assert secret not in listed.text
        assert secret not in requests.get(f"{accounts_sim.base_url}/_sim/stats", timeout=10).text


@pytest.mark.parametrize(
    ("method", "name", "body", "status"),
    [
        ("PUT", "bad", {"api_key": 7}, 400),
        ("PUT", "bad", {"max_concurrency": 1}, 400),
        ("PUT", "bad", {"api_key": "k", "max_concurrency": 0}, 400),
        ("PUT", "bad", {"api_key": "k", "colour": "red"}, 400),
        ("PATCH", "nobody", {"balance_units": 1}, 404),
        ("PATCH", "main", {"api_key": "k"}, 400),
        ("PATCH", "main", {"balance_units": -1}, 400),
        ("PATCH", "main", {"billing_format": "roman"}, 400),
    ],
)
def test_bad_account_changes_are_refused(
    accounts_sim: RunningSimulator, method: str, name: str, body: dict[str, Any], status: int
) -> None:
    answer = requests.request(
        method, f"{accounts_sim.base_url}/_sim/accounts/{name}", json=body, timeout=10
    )
    assert answer.status_code == status
    assert "error" in answer.json()


def test_reset_restores_the_start_up_accounts_and_balances(accounts_sim: RunningSimulator) -> None:
    accounts_sim.update_account("main", balance_units=0)
    accounts_sim.put_account("extra", api_key="sk-extra")
    accounts_sim.reset()

    accounts = accounts_sim.stats()["accounts"]
    assert set(accounts) == {"main", "backup"}
    assert accounts["main"]["balance_units"] == 3
    success_data(call(accounts_sim, bearer(MAIN_KEY)))


def test_start_up_credentials_are_the_default_account_beside_the_others(
    make_sim: Callable[..., RunningSimulator],
) -> None:
    sim = make_sim(api_key="sk-legacy", accounts=ACCOUNTS)
    success_data(call(sim, bearer("sk-legacy")))
    assert list(sim.stats()["accounts"]) == ["default", "main", "backup"]
    assert sim.stats()["accounts"]["default"]["calls"] == 1


def test_the_cli_reads_an_accounts_file_and_prints_no_key(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        f'[[accounts]]\nname = "main"\napi_key = "{MAIN_KEY}"\nmax_concurrency = 2\n'
        'max_rate = 5.0\nbase_url = "https://api.cometapi.com/kling"\nbalance_units = 1\n'
    )
    process = subprocess.Popen(
        [str(SCRIPT), "--port", "0", "--accounts-file", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        match = re.fullmatch(r"kling-api-sim serving at (\S+)\n", process.stdout.readline())
        assert match
        url = match.group(1) + "/v1/videos/multi-elements/init-selection"
        success_data(requests.post(url, json=DEMO, headers=bearer(MAIN_KEY), timeout=10))
        kling_envelope(requests.post(url, json=DEMO, headers=bearer(MAIN_KEY), timeout=10), 1102)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert MAIN_KEY not in out + err


def test_the_cli_refuses_a_bad_accounts_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(f'[[accounts]]\nname = "main"\napi_key = "{MAIN_KEY}"\nbalance_units = -2\n')
    result = subprocess.run(
        [str(SCRIPT), "--accounts-file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "balance_units must be >= 0" in result.stderr
    assert MAIN_KEY not in result.stderr
