"""What the fleet's shared store (``REDIS_URL``) says about upstream calls, per account: how many
are in flight against the fleet-wide cap, the cap the fleet is backing off to, and whether calls
are paused by the circuit breaker.

Read-only, a few O(log n) commands in one round trip. The key names are the limiter's
(worker/coordination/limits_redis.py) and the breaker's (contract/keys.py);
tests/worker/ops/test_fleet_state.py reads them back from a real limiter and breaker.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from contract import keys
from contract.settings import Settings
from contract.shared_store import store_client
from worker.accounts import load_accounts
from worker.ops.queue_probe import PROBE_TIMEOUT_S, ProbeFailed


@dataclass(frozen=True)
class AccountKeys:
    """Where one account's call limits and breaker live in the shared store."""

    name: str
    #: ``RedisLimiter``'s ``key_prefix``: ``<prefix>:slots`` (a sorted set of leases scored by
    #: their expiry, in µs) and ``<prefix>:target`` (the lowered in-flight target, if any).
    limits_prefix: str
    breaker_key: str
    #: The configured cap on calls in flight across the fleet.
    call_limit: int


def accounts_from_settings(settings: Settings) -> list[AccountKeys]:
    """The accounts whose state the exporter reads: those of ``KLING_ACCOUNTS_FILE`` (else the
    one ``default`` account), each with its own keys and ``max_concurrency``."""
    return [
        AccountKeys(
            name=account.name,
            limits_prefix=keys.account_limits(account.name),
            breaker_key=keys.account_breaker(account.name),
            call_limit=account.max_concurrency,
        )
        for account in load_accounts(settings)
    ]


@dataclass(frozen=True)
class AccountState:
    account: str
    calls_in_flight: int
    call_limit: int
    #: The in-flight target after the fleet backed off on busy answers (the limit if it did not).
    call_target: float
    paused: bool


class FleetStateReader:
    def __init__(self, client: redis.Redis, accounts: list[AccountKeys]) -> None:
        self._redis = client
        self._accounts = accounts

    @classmethod
    def from_settings(cls, settings: Settings, accounts: list[AccountKeys]) -> FleetStateReader:
        return cls(store_client(settings, socket_timeout_s=PROBE_TIMEOUT_S), accounts)

    def read(self) -> list[AccountState]:
        """Every account's state now; raises :class:`ProbeFailed` when the store does not answer."""
        try:
            seconds, micros = self._redis.time()
            now_us = seconds * 1_000_000 + micros
            pipe = self._redis.pipeline(transaction=False)
            for account in self._accounts:
                # Leases past their expiry belong to dead callers: not in flight.
                pipe.zcount(f"{account.limits_prefix}:slots", f"({now_us}", "+inf")
                pipe.get(f"{account.limits_prefix}:target")
                pipe.exists(account.breaker_key)
            answers = pipe.execute()
        except redis.RedisError as exc:
            raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc
        states = []
        for index, account in enumerate(self._accounts):
            in_flight, target, paused = answers[3 * index : 3 * index + 3]
            limit = float(account.call_limit)
            states.append(
                AccountState(
                    account=account.name,
                    calls_in_flight=int(in_flight),
                    call_limit=account.call_limit,
                    call_target=min(limit, float(target)) if target is not None else limit,
                    paused=bool(paused),
                )
            )
        return states

    def close(self) -> None:
        self._redis.close()
