"""Where the fleet's shared state lives in Redis (``REDIS_URL``).

Workers write these keys; ``kling-jobs status`` reads them. Every key starts with
:data:`PREFIX`, so one Redis database can be shared with other applications.
"""

from __future__ import annotations

#: The first part of every key the fleet writes.
PREFIX = "kling"
#: The circuit breaker's state (JSON), set while calls are paused (one breaker, no account).
BREAKER = f"{PREFIX}:circuit"
#: Prefix of the fleet-wide call limiter's keys (one limiter, no account).
LIMITS = f"{PREFIX}:limits"


def account_breaker(account: str) -> str:
    """Prefix of the circuit breaker keys of ``account``: the pause (JSON, expiring), the probe
    due after it, and who holds the probe call."""
    return f"{PREFIX}:account:{account}:circuit"


def account_limits(account: str) -> str:
    """Prefix of the fleet-wide call limiter keys of ``account`` (its cap, rate and back-off)."""
    return f"{PREFIX}:account:{account}:limits"


def outcome(job_id: str) -> str:
    """The recorded result of ``job_id`` (its JSON), kept for the outcome TTL."""
    return f"{PREFIX}:job:{job_id}:outcome"


def lease(job_id: str) -> str:
    """Who runs ``job_id`` now (a holder id), with a short expiry its holder keeps renewing."""
    return f"{PREFIX}:job:{job_id}:lease"


def answered(job_id: str) -> str:
    """Set once the recorded result of ``job_id`` is published: ``lasting`` (a resubmission
    gets it again) or ``passing`` (a resubmission runs afresh); kept as long as the outcome."""
    return f"{PREFIX}:job:{job_id}:answered"


def job_pattern(kind: str) -> str:
    """A ``SCAN`` pattern for every job key of ``kind`` (``outcome`` or ``lease``)."""
    return f"{PREFIX}:job:*:{kind}"
