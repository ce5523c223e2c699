"""The Kling accounts a worker calls with (docs/contract.md, "Accounts").

``KLING_ACCOUNTS_FILE`` names a TOML file of ``[[accounts]]`` tables; without it the fleet has
one account, ``default``, made of the ``KLING_*`` variables, so a single-account fleet behaves
as before. A file that cannot be read, is not TOML, breaks the schema or names an account twice
raises :class:`~worker.errors.ConfigurationError` while the runtime is built, which stops the
worker at start. Messages name the file, the line or the account, never a value from it: a
secret typed into the wrong field must not reach a log either.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from contract.jobs import ACCOUNT_NAME_PATTERN
from contract.settings import Settings
from worker.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: The one account of a fleet without ``KLING_ACCOUNTS_FILE``.
DEFAULT_ACCOUNT = "default"

_ENTRY_HEADER = re.compile(r"^\s*\[\[\s*accounts\s*\]\]")
_NAME = re.compile(ACCOUNT_NAME_PATTERN)


@dataclass(frozen=True)
class Account:
    """One Kling account: where to call, with which keys, and its fleet-wide limits.

    Secrets are ``SecretStr``, so the ``repr`` of an account shows none.
    """

    name: str
    base_url: str
    max_concurrency: int
    max_rate: float | None = None
    api_key: SecretStr | None = None
    access_key: str | None = None
    secret_key: SecretStr | None = None

    def secrets(self) -> list[str]:
        """The secret values of this account (for the log scrubber)."""
        return [s.get_secret_value() for s in (self.api_key, self.secret_key) if s is not None]


NonEmpty = Annotated[str, Field(min_length=1)]


class AccountEntry(BaseModel):
    """One ``[[accounts]]`` table, exactly as the file must hold it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: Annotated[str, Field(pattern=ACCOUNT_NAME_PATTERN)]
    api_key: SecretStr | None = None
    access_key: NonEmpty | None = None
    secret_key: SecretStr | None = None
    max_concurrency: Annotated[int, Field(ge=1)]
    max_rate: Annotated[float, Field(gt=0)] | None = None
    base_url: NonEmpty | None = None

    @field_validator("base_url")
    @classmethod
    def _web_url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an absolute http or https URL")
        return url

    @model_validator(mode="after")
    def _one_key_scheme(self) -> AccountEntry:
        api_key = bool(self.api_key and self.api_key.get_secret_value())
        secret_key = bool(self.secret_key and self.secret_key.get_secret_value())
        jwt = bool(self.access_key) or secret_key
        if api_key and jwt:
            raise ValueError("give api_key, or access_key and secret_key, not both")
        if not api_key and not (self.access_key and secret_key):
            raise ValueError("needs api_key, or access_key and secret_key")
        return self

    def account(self, default_base_url: str) -> Account:
        return Account(
            name=self.name,
            base_url=self.base_url or default_base_url,
            max_concurrency=self.max_concurrency,
            max_rate=self.max_rate,
            api_key=self.api_key,
            access_key=self.access_key,
            secret_key=self.secret_key,
        )


def load_accounts(settings: Settings) -> tuple[Account, ...]:
    """The fleet's accounts, in the order listed: from ``KLING_ACCOUNTS_FILE``, else the one
    ``default`` account of the ``KLING_*`` variables."""
    path = settings.kling_accounts_file
    if path is None:
        return (default_account(settings),)
    ignored = [
        name
        for name, value in (
            ("KLING_API_KEY", settings.kling_api_key),
            ("KLING_ACCESS_KEY", settings.kling_access_key),
            ("KLING_SECRET_KEY", settings.kling_secret_key),
        )
        if value
    ]
    if ignored:
        logger.warning(
            "KLING_ACCOUNTS_FILE is set: %s not used (each account has its keys in the file).",
            ", ".join(ignored),
        )
    return read_accounts_file(path, default_base_url=settings.kling_api_base_url)


def default_account(settings: Settings) -> Account:
    """The single account of a fleet without an accounts file."""
    return Account(
        name=DEFAULT_ACCOUNT,
        base_url=settings.kling_api_base_url,
        max_concurrency=settings.kling_max_concurrency,
        max_rate=settings.kling_max_rate,
        api_key=settings.kling_api_key,
        access_key=settings.kling_access_key,
        secret_key=settings.kling_secret_key,
    )


def read_accounts_file(path: Path, *, default_base_url: str) -> tuple[Account, ...]:
    """Parse and check an accounts file; :class:`ConfigurationError` says what is wrong."""
    where = f"KLING_ACCOUNTS_FILE {path}"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigurationError(f"{where} is not UTF-8 text (line {line})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The parser's messages name the line and column, and at most one character.
        raise ConfigurationError(f"{where} is not valid TOML: {exc}") from None
    entries = _entries(document, where)
    lines = _entry_lines(text, len(entries))
    problems: list[str] = []
    accounts: dict[int, Account] = {}
    for index, entry in enumerate(entries):
        try:
            accounts[index] = AccountEntry.model_validate(entry).account(default_base_url)
        except ValidationError as exc:
            label = _label(entry, index, lines)
            problems += [f"{label}: {problem}" for problem in _problems(exc)]
    problems += _duplicates(accounts, lines)
    if problems:
        raise ConfigurationError(f"{where}: " + "; ".join(problems))
    return tuple(accounts.values())


def _entries(document: dict[str, Any], where: str) -> list[Any]:
    unknown = sorted(set(document) - {"accounts"})
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown top-level key(s) {', '.join(unknown)}; "
            "the file holds only [[accounts]] tables"
        )
    entries = document.get("accounts")
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{where}: no [[accounts]] table; list at least one account")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: accounts entry #{index + 1} is not a table")
    return entries


def _entry_lines(text: str, count: int) -> list[int] | None:
    """The line of each ``[[accounts]]`` header, when the file spells every entry that way."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if _ENTRY_HEADER.match(line)]
    return lines if len(lines) == count else None


def _label(entry: dict[str, Any], index: int, lines: list[int] | None) -> str:
    name = entry.get("name")
    # Only a valid name is shown: anything else might be a key pasted in the wrong place.
    shown = f"account {name!r}" if isinstance(name, str) and _NAME.match(name) else "account"
    at = f"line {lines[index]}" if lines else f"entry #{index + 1}"
    return f"{shown} ({at})"


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{field}: {message}" if field else message)
    return problems


def _duplicates(accounts: dict[int, Account], lines: list[int] | None) -> list[str]:
    """One problem per name listed again (``accounts``: by entry index)."""
    seen: dict[str, int] = {}
    problems = []
    for index, account in accounts.items():
        if account.name in seen:
            first, again = seen[account.name], index
            at = (
                f"lines {lines[first]} and {lines[again]}"
                if lines
                else f"entries #{first + 1} and #{again + 1}"
            )
            problems.append(f"account {account.name!r} is listed twice ({at})")
        else:
            seen[account.name] = index
    return problems
