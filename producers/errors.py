"""Errors the producer library raises; every one is a :class:`~contract.errors.ContractError`.

::

    ContractError
    ├── InvalidJobError         the job breaks the contract: nothing was sent
    └── ProducerError           a valid request the broker or the shared store did not serve
        ├── PublishNotConfirmed nacked, not confirmed in time, or the channel closed
        ├── BrokerUnavailable   the broker cannot be reached (dead letters)
        └── SharedStoreUnavailable  REDIS_URL is unset or the store does not answer (status)
"""

from __future__ import annotations

from contract.errors import ContractError, InvalidJobError


class ProducerError(ContractError):
    """Root of the errors about valid requests (jobs, status, dead letters) that failed."""


class PublishNotConfirmed(ProducerError):
    """Raised when the broker nacks a job, does not confirm it in time, or closes the channel.

    Some of the jobs may have been enqueued: submitting them all again is safe, since a
    ``job_id`` never opens a second session (docs/contract.md, "A job").
    """


class SharedStoreUnavailable(ProducerError):
    """Raised when ``REDIS_URL`` is unset or the fleet's shared store does not answer."""


class BrokerUnavailable(ProducerError):
    """Raised when the broker cannot be reached or drops the connection mid-way."""


__all__ = [
    "BrokerUnavailable",
    "ContractError",
    "InvalidJobError",
    "ProducerError",
    "PublishNotConfirmed",
    "SharedStoreUnavailable",
]
