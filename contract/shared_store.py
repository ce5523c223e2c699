"""The fleet's shared store: one Redis server at ``REDIS_URL``, or the primary that a Sentinel
group names (``REDIS_SENTINELS``), followed through failovers.

Every process that reads or writes the store (workers, the queue exporter, ``kling-jobs
status``) connects through :func:`store_client`, so all of them follow the same primary.
A managed Redis behind one address (ElastiCache, Memorystore) needs ``REDIS_URL`` alone.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from contract.settings import Settings, sentinel_addresses


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool with a bound on connections that callers wait for, instead of failing
    with "Too many connections" (as :class:`redis.BlockingConnectionPool` does for one server)."""


def store_client(
    settings: Settings,
    *,
    socket_timeout_s: float,
    max_connections: int | None = None,
    pool_timeout_s: float | None = None,
    health_check_interval_s: int = 0,
) -> redis.Redis:
    """A client of the shared store; ``max_connections`` bounds its pool, and a caller waits up
    to ``pool_timeout_s`` for a free connection. Raises ValueError for an unusable URL or when
    no store is configured."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "health_check_interval": health_check_interval_s,
    }
    if max_connections is not None:
        options |= {"max_connections": max_connections, "timeout": pool_timeout_s}
    if settings.redis_sentinels:
        return _primary_of(settings, settings.redis_sentinels, options)
    if not settings.redis_url:
        raise ValueError("no shared store: set REDIS_URL (or REDIS_SENTINELS)")
    if max_connections is None:
        return redis.Redis.from_url(settings.redis_url, **options)
    pool = redis.BlockingConnectionPool.from_url(settings.redis_url, **options)
    return redis.Redis(connection_pool=pool)


def _primary_of(settings: Settings, sentinels: str, options: dict[str, Any]) -> redis.Redis:
    # REDIS_URL gives the database and the password; its host is the Sentinels' to name.
    from_url: dict[str, Any] = parse_url(settings.redis_url) if settings.redis_url else {}  # type: ignore[no-untyped-call]
    credentials = {key: from_url[key] for key in ("db", "username", "password") if key in from_url}
    sentinel = Sentinel(
        sentinel_addresses(sentinels),
        sentinel_kwargs={
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        },
    )
    pool_class = BlockingSentinelPool if "max_connections" in options else SentinelConnectionPool
    client: redis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=pool_class,
        **credentials,
        **options,
    )
    return client
