"""``kling-jobs status``: where a job is, read from the fleet's shared store (``REDIS_URL``).

Workers keep two keys per job (``contract/keys.py``): the recorded outcome, for as long as the
outcome TTL, and a short lease while a worker runs the job. So a job is

- ``recorded``: its outcome is stored (the ``result`` is the one that was published);
- ``running``: a worker holds its lease now;
- ``unknown``: neither. Still queued, never submitted, or finished with an outcome the fleet does
  not remember (a failure about our account or an outage: see docs/operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis

from contract import keys
from contract.settings import Settings
from contract.shared_store import store_client
from producers.errors import SharedStoreUnavailable

JobState = Literal["recorded", "running", "unknown"]
#: Jobs asked in one round trip.
BATCH_SIZE = 500
#: How long the store may take to answer before it counts as unreachable.
STORE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: JobState
    #: The recorded result as stored (the published JSON), or ``None``.
    result: dict[str, Any] | None

    def to_json(self) -> str:
        """One JSON line: ``{"job_id", "state", "result"}`` (docs/contract.md, "Command line")."""
        wire = {"job_id": self.job_id, "state": self.state, "result": self.result}
        return json.dumps(wire, ensure_ascii=False, separators=(",", ":"))


def job_statuses(settings: Settings, job_ids: Sequence[str]) -> Iterator[JobStatus]:
    """The status of each of ``job_ids``, in order, read from the fleet's shared store.

    Raises :class:`SharedStoreUnavailable` when no store is configured or it does not answer
    (statuses already yielded stay true).
    """
    if not settings.has_shared_store:
        raise SharedStoreUnavailable(
            "REDIS_URL is not set: without a shared store no job status is kept across the fleet"
        )
    try:
        client = store_client(settings, socket_timeout_s=STORE_TIMEOUT_S)
    except ValueError as exc:
        raise SharedStoreUnavailable(f"REDIS_URL is not a Redis URL: {exc}") from exc
    try:
        for start in range(0, len(job_ids), BATCH_SIZE):
            yield from _batch(client, job_ids[start : start + BATCH_SIZE])
    except redis.RedisError as exc:
        raise SharedStoreUnavailable(
            f"the shared store cannot be reached: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        client.close()


def _batch(client: redis.Redis, job_ids: Sequence[str]) -> Iterator[JobStatus]:
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.get(keys.outcome(job_id))
        pipe.exists(keys.lease(job_id))
    answers = pipe.execute()
    for index, job_id in enumerate(job_ids):
        outcome, leased = answers[2 * index], answers[2 * index + 1]
        if outcome is not None:
            yield JobStatus(job_id, "recorded", json.loads(outcome))
        elif leased:
            yield JobStatus(job_id, "running", None)
        else:
            yield JobStatus(job_id, "unknown", None)
