"""Errors raised by the contract's code, rooted so a caller can catch them all at once.

::

    ContractError
    ├── InvalidJobError         a job breaks the contract (raised before anything is sent)
    └── producers.errors.ProducerError
        └── PublishNotConfirmed the broker did not confirm a job
"""

from __future__ import annotations


class ContractError(Exception):
    """Root of every error the contract, the producer library and its CLI raise on purpose."""


class InvalidJobError(ContractError, ValueError):
    """Raised when a message breaks the job contract; the message says how."""
