"""The fleet's shared store: the one place that chooses Redis or in-process state.

The Redis implementations translate every Redis error into :class:`~worker.errors.StoreUnavailable`
(:func:`~worker.coordination.translation.translated`), so the rest of the worker never imports
``redis`` to decide what an outage means.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import redis

from contract import keys
from contract.settings import Settings
from contract.shared_store import store_client
from worker.coordination.breaker import BreakerState, LocalBreaker, RedisBreaker
from worker.coordination.limits import CallLimiter, LocalLimiter, lease_s_from_settings
from worker.coordination.limits_redis import RedisLimiter
from worker.coordination.outcomes import JOB_LEASE_S, OutcomeStore
from worker.coordination.outcomes_local import LocalOutcomeStore
from worker.coordination.outcomes_redis import RedisOutcomeStore
from worker.coordination.pipelining import PipelinedCommands
from worker.coordination.renewal import LeaseRenewer, tick_s_for
from worker.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Most Redis connections the jobs of one process share. A command holds one for a round trip
#: and nothing holds one while waiting, so a few dozen serve thousands of greenlets; one per
#: greenlet (650 of them at 2,000 calls in flight) cost memory (docs/performance.md).
MAX_JOB_CONNECTIONS = 48
#: Extra Redis connections beyond the jobs' (renewal, breaker reads, metrics).
SPARE_CONNECTIONS = 16
#: How long a thread waits for a free pooled connection before the store counts as away.
POOL_WAIT_S = 30
SOCKET_TIMEOUT_S = 10


@dataclass
class Coordination:
    """What the worker processes of a fleet share: outcomes and leases, and for each account a
    breaker and call limits (:meth:`breaker_for`, :meth:`limiter_for`).

    With Redis, ``renewer`` keeps this process's job leases and call slots alive: :meth:`start`
    it with the worker, :meth:`close` stops it (after ``commands`` has sent what it holds).
    In-process state needs no renewal (its leases last until released), so ``renewer`` is then
    ``None`` and both calls still work.
    """

    outcomes: OutcomeStore
    client: redis.Redis | None
    #: How long an account's calls pause after an account failure (KLING_CIRCUIT_OPEN_SECONDS).
    open_s: float
    #: Longest a call holds its slot, and a probe call the probe (KLING_SLOT_LEASE_SECONDS).
    lease_s: float
    renewer: LeaseRenewer | None = None
    #: The jobs' small Redis commands, many in one round trip.
    commands: PipelinedCommands | None = None
    #: Set on warm shutdown: calls still waiting for a slot go back unmade.
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        pool_size: int | None = None,
        stopping: threading.Event | None = None,
    ) -> Coordination:
        """Shared through Redis when ``REDIS_URL`` is set, else within this process.

        The Redis server is asked once here, so a wrong ``REDIS_URL`` stops the worker at start
        (:class:`ConfigurationError`) instead of failing its first job. ``stopping`` (set on
        warm shutdown) makes calls still waiting for a slot go back unmade.
        """
        lease_s = lease_s_from_settings(settings)
        common = {
            "open_s": settings.kling_circuit_open_seconds,
            "lease_s": lease_s,
            "stopping": stopping or threading.Event(),
        }
        if not settings.has_shared_store:
            logger.warning(
                "REDIS_URL is not set: idempotency, the circuit breakers and call limits hold "
                "within this worker process only. Set REDIS_URL to share them across the fleet."
            )
            return cls(outcomes=LocalOutcomeStore(), client=None, **common)  # type: ignore[arg-type]
        client = connect(settings, pool_size or settings.worker_concurrency)
        tick_s = tick_s_for(JOB_LEASE_S, lease_s)
        renewer = LeaseRenewer(renewal_client(settings, tick_s), tick_s=tick_s)
        commands = PipelinedCommands(client)
        return cls(
            outcomes=RedisOutcomeStore(client, renewer=renewer, commands=commands),
            client=client,
            renewer=renewer,
            commands=commands,
            **common,  # type: ignore[arg-type]
        )

    def breaker_for(self, account: str) -> BreakerState:
        """The circuit breaker of ``account`` (its own Redis keys)."""
        if self.client is None:
            return LocalBreaker(open_s=self.open_s, account=account, probe_lease_s=self.lease_s)
        return RedisBreaker(
            self.client,
            open_s=self.open_s,
            key=keys.account_breaker(account),
            account=account,
            probe_lease_s=self.lease_s,
        )

    def limiter_for(
        self, account: str, *, max_concurrency: int, max_rate: float | None
    ) -> CallLimiter:
        """The fleet-wide cap, rate and back-off of ``account`` (its own Redis keys)."""
        if self.client is None:
            return LocalLimiter(
                max_concurrency=max_concurrency, max_rate=max_rate, stopping=self.stopping
            )
        return RedisLimiter(
            self.client,
            max_concurrency=max_concurrency,
            max_rate=max_rate,
            lease_s=self.lease_s,
            key_prefix=keys.account_limits(account),
            owns_client=False,
            renewer=self.renewer,
            stopping=self.stopping,
            commands=self.commands,
        )

    def start(self) -> None:
        """Start renewing this process's leases (nothing to do without Redis)."""
        if self.renewer is not None:
            self.renewer.start()

    def close(self) -> None:
        if self.commands is not None:
            self.commands.close()
        if self.renewer is not None:
            self.renewer.stop()
            self.renewer.close()
        if self.client is not None:
            self.client.close()


def connect(settings: Settings, pool_size: int) -> redis.Redis:
    """A client on a blocking pool (a thread waits for a free connection instead of failing),
    checked with one ``PING``."""
    try:
        client = store_client(
            settings,
            socket_timeout_s=SOCKET_TIMEOUT_S,
            max_connections=min(pool_size, MAX_JOB_CONNECTIONS) + SPARE_CONNECTIONS,
            pool_timeout_s=POOL_WAIT_S,
            health_check_interval_s=30,
        )
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise ConfigurationError(
            f"the shared store cannot be reached: {type(exc).__name__}: {exc}"
        ) from exc
    return client


def renewal_client(settings: Settings, tick_s: float) -> redis.Redis:
    """The renewer's own connection: never queued behind the jobs' commands, and given up on
    after one tick, so one stalled renewal costs a tick and the next one tries again."""
    return store_client(settings, socket_timeout_s=tick_s, max_connections=2, pool_timeout_s=tick_s)
