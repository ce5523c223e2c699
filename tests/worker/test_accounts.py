"""The accounts file (KLING_ACCOUNTS_FILE): what it may hold, and every way it can be wrong.

Every error names the file and the line or account, and no message shows a secret from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from contract.settings import Settings
from worker.accounts import DEFAULT_ACCOUNT, load_accounts, read_accounts_file
from worker.errors import ConfigurationError
from worker.runtime import Runtime

SECRETS = ("sk-main-SECRET-0a1b2c", "ak-backup-3d4e5f", "sk-backup-SECRET-6a7b8c")
TWO_ACCOUNTS = f"""\
# two accounts
[[accounts]]
name = "main"
api_key = "{SECRETS[0]}"
max_concurrency = 20
max_rate = 5

[[accounts]]
name = "backup"
access_key = "{SECRETS[1]}"
secret_key = "{SECRETS[2]}"
max_concurrency = 10
base_url = "https://api-singapore.klingai.com"
"""
BASE = "https://api.cometapi.com/kling"


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "accounts.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problem(path: Path) -> str:
    """The message the file raises; it must never hold a secret."""
    with pytest.raises(ConfigurationError) as caught:
        read_accounts_file(path, default_base_url=BASE)
    message = str(caught.value)
    assert str(path) in message
    for secret in SECRETS:
        assert secret not in message
    return message


def test_without_a_file_the_fleet_has_one_default_account_from_the_kling_variables() -> None:
    settings = Settings(
        _env_file=None,
        kling_api_key=SecretStr("sk-x"),
        kling_max_concurrency=7,
        kling_max_rate=2.0,
        kling_api_base_url="https://example.com/kling",
    )
    (account,) = load_accounts(settings)
    assert account.name == DEFAULT_ACCOUNT
    assert (account.max_concurrency, account.max_rate) == (7, 2.0)
    assert account.base_url == "https://example.com/kling"
    assert account.secrets() == ["sk-x"]


def test_a_file_lists_accounts_in_order_with_their_own_limits_and_keys(tmp_path: Path) -> None:
    main, backup = read_accounts_file(write(tmp_path, TWO_ACCOUNTS), default_base_url=BASE)

    assert (main.name, main.max_concurrency, main.max_rate, main.base_url) == (
        "main",
        20,
        5.0,
        BASE,
    )
    assert main.api_key is not None
    assert main.api_key.get_secret_value() == SECRETS[0]
    assert (backup.name, backup.max_concurrency, backup.max_rate) == ("backup", 10, None)
    assert backup.base_url == "https://api-singapore.klingai.com"
    assert backup.access_key == SECRETS[1]
    assert backup.secret_key is not None
    assert backup.secret_key.get_secret_value() == SECRETS[2]
    shown = repr((main, backup))
    assert SECRETS[0] not in shown
    assert SECRETS[2] not in shown


def test_the_file_setting_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLING_ACCOUNTS_FILE", str(write(tmp_path, TWO_ACCOUNTS)))
    assert [a.name for a in load_accounts(Settings(_env_file=None))] == ["main", "backup"]


def test_a_missing_file_cannot_be_read(tmp_path: Path) -> None:
    assert "cannot be read: No such file or directory" in problem(tmp_path / "nope.toml")


def test_a_directory_cannot_be_read(tmp_path: Path) -> None:
    assert "cannot be read: Is a directory" in problem(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_cannot_be_read(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_ACCOUNTS)
    path.chmod(0)
    assert "cannot be read: Permission denied" in problem(path)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_ACCOUNTS.encode().replace(b"# two", b"\n\n# tw\xff"))
    assert "is not UTF-8 text (line 3)" in problem(path)


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    broken = TWO_ACCOUNTS.replace("max_concurrency = 10", 'max_concurrency 10 "sk-SECRET"')
    message = problem(write(tmp_path, broken))
    assert "is not valid TOML" in message
    assert "line 12" in message


def test_an_unterminated_secret_string_is_not_shown(tmp_path: Path) -> None:
    broken = TWO_ACCOUNTS.replace(f'"{SECRETS[2]}"', f'"{SECRETS[2]}')
    assert "line 11" in problem(write(tmp_path, broken))


@pytest.mark.parametrize("missing", ["name", "max_concurrency"])
def test_a_missing_key_names_the_account_or_its_line(tmp_path: Path, missing: str) -> None:
    lines = [line for line in TWO_ACCOUNTS.splitlines() if not line.startswith(f"{missing} = 10")]
    text = "\n".join(lines)
    if missing == "name":
        text = text.replace('name = "backup"\n', "")
    message = problem(write(tmp_path, text))
    where = "account (line 8)" if missing == "name" else "account 'backup' (line 8)"
    assert f"{where}: {missing}: Field required" in message


def test_an_account_without_keys_is_refused(tmp_path: Path) -> None:
    text = TWO_ACCOUNTS.replace(f'api_key = "{SECRETS[0]}"\n', "")
    assert "account 'main' (line 2): needs api_key, or access_key and secret_key" in problem(
        write(tmp_path, text)
    )


def test_an_access_key_without_its_secret_key_is_refused(tmp_path: Path) -> None:
    text = TWO_ACCOUNTS.replace(f'secret_key = "{SECRETS[2]}"\n', "")
    assert "account 'backup' (line 8): needs api_key" in problem(write(tmp_path, text))


def test_both_key_schemes_in_one_account_are_refused(tmp_path: Path) -> None:
    text = TWO_ACCOUNTS.replace('name = "backup"\n', f'name = "backup"\napi_key = "{SECRETS[0]}"\n')
    assert "account 'backup' (line 8): give api_key, or access_key and secret_key, not both" in (
        problem(write(tmp_path, text))
    )


def test_a_name_used_twice_names_both_lines(tmp_path: Path) -> None:
    text = TWO_ACCOUNTS.replace('name = "backup"', 'name = "main"')
    assert "account 'main' is listed twice (lines 2 and 8)" in problem(write(tmp_path, text))


@pytest.mark.parametrize("name", ["main account", "", "a" * 65, "main/eu", SECRETS[0] + "!"])
def test_a_bad_name_is_refused_without_being_shown(tmp_path: Path, name: str) -> None:
    text = TWO_ACCOUNTS.replace('name = "main"', f'name = "{name}"')
    message = problem(write(tmp_path, text))
    assert "account (line 2): name: String should match pattern" in message
    if name:
        assert name not in message


def test_a_secret_in_the_wrong_field_is_not_shown(tmp_path: Path) -> None:
    text = TWO_ACCOUNTS.replace("max_concurrency = 20", f'max_concurrency = "{SECRETS[0]}"')
    text = text.replace(f'api_key = "{SECRETS[0]}"', f'apikey = "{SECRETS[0]}"')
    message = problem(write(tmp_path, text))
    assert "account 'main' (line 2): max_concurrency: Input should be a valid integer" in message
    assert "apikey: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ("max_concurrency = 0", "max_concurrency: Input should be greater than or equal to 1"),
        ("max_concurrency = 2.5", "max_concurrency: Input should be a valid integer"),
        ("max_concurrency = true", "max_concurrency: Input should be a valid integer"),
        ("max_concurrency = 1\nmax_rate = 0", "max_rate: Input should be greater than 0"),
        ('max_concurrency = 1\nbase_url = "ftp://x"', "base_url: must be an absolute http"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, limits: str, expected: str) -> None:
    text = TWO_ACCOUNTS.replace("max_concurrency = 20\nmax_rate = 5", limits)
    message = problem(write(tmp_path, text))
    assert f"account 'main' (line 2): {expected}" in message
    assert "backup" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no [[accounts]] table"),
        ("accounts = []", "no [[accounts]] table"),
        ('accounts = "main"', "no [[accounts]] table"),
        ("accounts = [1]", "accounts entry #1 is not a table"),
        (TWO_ACCOUNTS + "\n[pool]\nsize = 2\n", "unknown top-level key(s) pool"),
    ],
)
def test_a_file_without_account_tables_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problem(write(tmp_path, text))


def test_inline_accounts_are_named_by_entry_number(tmp_path: Path) -> None:
    text = f'accounts = [{{name = "a", api_key = "{SECRETS[0]}"}}]'
    assert "account 'a' (entry #1): max_concurrency: Field required" in problem(
        write(tmp_path, text)
    )


def test_a_bad_file_stops_the_runtime_from_being_built(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, kling_accounts_file=write(tmp_path, TWO_ACCOUNTS.replace("= 20", "= -1"))
    )
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        Runtime.build(settings)
