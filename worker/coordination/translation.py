"""Redis errors become the worker's own :class:`~worker.errors.StoreUnavailable` here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from worker.errors import StoreUnavailable


@contextmanager
def translated() -> Iterator[None]:
    """Turn a Redis error raised inside the block into :class:`StoreUnavailable`."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"the shared store did not answer: {exc}") from exc
