"""Errors the producer library raises; every one is a :class:`~contract.errors.ContractError`.

::

    ContractError
    ├── InvalidJobError         the job breaks the contract: nothing was sent
    └── ProducerError           the job was valid, but the broker did not take it
        └── PublishNotConfirmed nacked, not confirmed in time, or the channel closed
"""

from __future__ import annotations

from contract.errors import ContractError, InvalidJobError


class ProducerError(ContractError):
    """Root of the errors about getting valid jobs onto the broker."""


class PublishNotConfirmed(ProducerError):
    """Raised when the broker nacks a job, does not confirm it in time, or closes the channel.

    Some of the jobs may have been enqueued: submitting them all again is safe, since a
    ``job_id`` never opens a second session (docs/contract.md, "A job").
    """


__all__ = ["ContractError", "InvalidJobError", "ProducerError", "PublishNotConfirmed"]
