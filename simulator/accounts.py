"""Several Kling accounts at once: each with its keys, its parallel-task limit and a resource pack.

A call belongs to the account whose keys its `Authorization` header matches. Each account has
its own parallel limit (over it: 429/1303) and an optional balance in units: once it is spent
every call answers 429/1102 ("resource pack depleted"). A success bills 1 unit (clips up to
5.5 s) or 2, and says so in `final_unit_deduction` / `final_balance_deduction`, as numbers or,
like the real API sometimes, as strings (`billing_format`).

The start-up credentials (`--api-key`, `--access-key/--secret-key`) are the account `default`;
with none of them and no accounts configured, any bearer is `default` (the local demo).
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from simulator.auth import Credentials, check_authorization

#: Name of the account of the start-up credentials.
DEFAULT_ACCOUNT = "default"
#: How billing figures are written: numbers, strings, or alternately (string first).
BillingFormat = Literal["number", "string", "mixed"]
#: Price of one unit in the answers' `list_price`.
UNIT_LIST_PRICE = 0.14
#: Keys of the worker's accounts file the simulator reads past (so one file serves both).
WORKER_ONLY_KEYS = frozenset({"max_rate", "base_url"})
_FIELDS = {"api_key", "access_key", "secret_key", "max_concurrency", "balance_units"}
_LIVE_FIELDS = {"max_concurrency", "balance_units", "billing_format"}


class AccountConfigError(ValueError):
    """Raised when an account's settings are malformed (the message shows no secret)."""


@dataclass(frozen=True, slots=True)
class SimAccount:
    """One simulated account: keys, parallel limit (None: none) and balance (None: endless)."""

    name: str
    credentials: Credentials = field(default_factory=Credentials)
    max_concurrency: int | None = None
    balance_units: float | None = None
    billing_format: BillingFormat = "number"

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise AccountConfigError("an account needs a name")
        if self.max_concurrency is not None and (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise AccountConfigError(f"account {self.name!r}: max_concurrency must be at least 1")
        if self.balance_units is not None and (
            isinstance(self.balance_units, bool)
            or not isinstance(self.balance_units, int | float)
            or self.balance_units < 0
        ):
            raise AccountConfigError(f"account {self.name!r}: balance_units must be >= 0")
        if self.billing_format not in get_args(BillingFormat):
            raise AccountConfigError(
                f"account {self.name!r}: billing_format must be number, string or mixed"
            )

    @classmethod
    def from_json(cls, name: str, data: Any) -> SimAccount:
        """Build from a JSON (or TOML) object; AccountConfigError when malformed."""
        if not isinstance(data, dict):
            raise AccountConfigError(f"account {name!r} must be an object")
        unknown = sorted(set(data) - _FIELDS - {"billing_format"} - WORKER_ONLY_KEYS)
        if unknown:
            raise AccountConfigError(f"account {name!r}: unknown fields {', '.join(unknown)}")
        keys = {key: data.get(key) for key in ("api_key", "access_key", "secret_key")}
        if any(value is not None and not isinstance(value, str) for value in keys.values()):
            raise AccountConfigError(f"account {name!r}: keys must be strings")
        if bool(keys["access_key"]) != bool(keys["secret_key"]):
            raise AccountConfigError(f"account {name!r}: access_key and secret_key go together")
        if not keys["api_key"] and not keys["access_key"]:
            raise AccountConfigError(f"account {name!r}: needs api_key or access_key/secret_key")
        return cls(
            name=name,
            credentials=Credentials(keys["api_key"], keys["access_key"], keys["secret_key"]),
            max_concurrency=data.get("max_concurrency"),
            balance_units=data.get("balance_units"),
            billing_format=data.get("billing_format", "number"),
        )

    def with_live(self, data: Any) -> SimAccount:
        """A copy with `max_concurrency`, `balance_units` or `billing_format` changed."""
        if not isinstance(data, dict) or not data:
            raise AccountConfigError("give max_concurrency, balance_units or billing_format")
        unknown = sorted(set(data) - _LIVE_FIELDS)
        if unknown:
            raise AccountConfigError(f"cannot change {', '.join(unknown)} of a live account")
        return replace(self, **data)

    def to_json(self) -> dict[str, Any]:
        """The account as `GET /_sim/accounts` shows it: no key, only which scheme it takes."""
        creds = self.credentials
        schemes = [
            name for name, on in (("api_key", creds.api_key), ("jwt", creds.jwt_enabled)) if on
        ]
        return {
            "name": self.name,
            "auth": schemes or ["any bearer"],
            "max_concurrency": self.max_concurrency,
            "balance_units": self.balance_units,
            "billing_format": self.billing_format,
        }


def read_accounts_file(path: Path) -> tuple[SimAccount, ...]:
    """`[[accounts]]` tables (the worker's KLING_ACCOUNTS_FILE format, plus `balance_units` and
    `billing_format`); AccountConfigError names the problem without showing a value."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AccountConfigError(f"accounts file {path}: {exc}") from None
    entries = document.get("accounts")
    if not isinstance(entries, list) or not entries:
        raise AccountConfigError(f"accounts file {path}: no [[accounts]] table")
    accounts = []
    for index, entry in enumerate(entries, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise AccountConfigError(f"accounts file {path}: entry #{index} has no name")
        accounts.append(SimAccount.from_json(name, {k: v for k, v in entry.items() if k != "name"}))
    names = [account.name for account in accounts]
    if len(set(names)) != len(names):
        raise AccountConfigError(f"accounts file {path}: an account name is listed twice")
    return tuple(accounts)


class AccountState:
    """One account's live state: balance, calls admitted, and what it has seen."""

    def __init__(self, config: SimAccount) -> None:
        self.config = config
        self.balance_units = config.balance_units
        self.admitted = 0
        self.calls = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.sessions_opened = 0
        self.units_billed = 0.0
        self.by_code: Counter[str] = Counter()

    def started(self) -> None:
        self.calls += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def finished(self, code: str) -> None:
        self.in_flight -= 1
        self.by_code[code] += 1

    @property
    def depleted(self) -> bool:
        return self.balance_units is not None and self.balance_units <= 0

    @property
    def full(self) -> bool:
        limit = self.config.max_concurrency
        return limit is not None and self.admitted >= limit

    def bill(self, units: int) -> dict[str, Any]:
        """Charge a success `units`; the billing fields of its answer."""
        self.sessions_opened += 1
        self.units_billed += units
        if self.balance_units is not None:
            self.balance_units = max(0.0, self.balance_units - units)
        as_strings = self.config.billing_format == "string" or (
            self.config.billing_format == "mixed" and self.sessions_opened % 2 == 1
        )
        price = round(UNIT_LIST_PRICE * units, 2)
        if as_strings:
            return {
                "final_unit_deduction": str(units),
                "final_balance_deduction": {"quota": str(units), "list_price": str(price)},
            }
        return {
            "final_unit_deduction": units,
            "final_balance_deduction": {"quota": units, "list_price": price},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.config.to_json(),
            "balance_units": self.balance_units,
            "calls": self.calls,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "sessions_opened": self.sessions_opened,
            "units_billed": self.units_billed,
            "by_code": dict(self.by_code),
        }


class AccountBook:
    """The accounts the simulator serves now, in the order configured."""

    def __init__(self, accounts: tuple[SimAccount, ...], credentials: Credentials) -> None:
        configured = list(accounts)
        if not credentials.open or not configured:
            configured.insert(0, SimAccount(DEFAULT_ACCOUNT, credentials))
        self.accounts: dict[str, AccountState] = {}
        for account in configured:
            if account.name in self.accounts:
                raise AccountConfigError(f"account {account.name!r} is configured twice")
            self.accounts[account.name] = AccountState(account)

    def identify(self, header: str | None) -> tuple[AccountState | None, int | None]:
        """The account `header` authenticates as, or None and the Kling refusal code."""
        codes = []
        for state in self.accounts.values():
            refused = check_authorization(header, state.config.credentials)
            if refused is None:
                return state, None
            codes.append(refused)
        # A JWT refused only for its time (1003/1004) is the more useful answer.
        timed = [code for code in codes if code in (1003, 1004)]
        return None, (timed or codes or [1002])[0]

    def put(self, account: SimAccount) -> bool:
        """Add or replace an account (its live state starts afresh); True when new."""
        new = account.name not in self.accounts
        self.accounts[account.name] = AccountState(account)
        return new

    def update(self, name: str, data: Any) -> AccountState:
        """Change a live account's limit, balance or billing format (KeyError: unknown)."""
        state = self.accounts[name]
        state.config = state.config.with_live(data)
        if "balance_units" in data:
            state.balance_units = state.config.balance_units
        return state

    def stats_json(self) -> dict[str, Any]:
        return {name: state.to_json() for name, state in self.accounts.items()}
