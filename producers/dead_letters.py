"""Dead letters (``kling.init_selection.dead``): look at them, and move them back to the job queue.

Workers set a message aside byte for byte when it is not a job at all (``publish_dead_letter`` in
worker/publisher.py): its body bytes, content type, content encoding and headers, with the reason in
the ``x-dead-letter-reason`` header.

- Listing takes each message without acknowledging it and gives every one back at the end, so
  nothing is removed. RabbitMQ puts a message given back in its old place; the Redis transport puts
  it at the back, which keeps the queue's order when every message was looked at.
- Replay publishes a matching message to the job queue with the same body bytes, content type,
  content encoding and headers (less the reason header), waits for the broker's confirm, and only
  then acknowledges the dead letter: a failure in between can leave a copy in both queues, never
  in neither.

Only the messages waiting when the command starts are looked at, so one given back is never read
twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from kombu.connection import Connection
from kombu.exceptions import OperationalError
from kombu.message import Message
from kombu.messaging import Producer

from contract.messages import raw_body
from contract.names import DEAD_LETTER_REASON_HEADER, JOB_QUEUE
from contract.settings import Settings
from contract.topology import JOB_EXCHANGE, connect, dead_letter_queue, job_queue
from producers.errors import BrokerUnavailable

#: Tries to reach the broker before giving up.
CONNECT_ATTEMPTS = 3
#: What a dead letter without a content type is published with (kombu would otherwise serialize
#: the bytes as JSON). Dead letters the workers write always carry one.
FALLBACK_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class DeadLetter:
    """One message on the dead-letter queue, as it was set aside."""

    reason: str | None
    headers: dict[str, Any]
    content_type: str | None
    content_encoding: str | None
    body: bytes

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        headers = dict(message.headers) if isinstance(message.headers, dict) else {}
        reason = headers.get(DEAD_LETTER_REASON_HEADER)
        return cls(
            reason=str(reason) if reason is not None else None,
            headers=headers,
            content_type=message.content_type or None,
            content_encoding=message.content_encoding or None,
            body=raw_body(message.body, message.content_encoding),
        )

    def replay_headers(self) -> dict[str, Any]:
        """The headers the message had before it was set aside."""
        return {
            name: value for name, value in self.headers.items() if name != DEAD_LETTER_REASON_HEADER
        }

    def to_wire(self) -> dict[str, Any]:
        """The JSON object ``kling-jobs dead-letters list`` prints: the body as text when it is
        UTF-8, else base64 (``body_encoding`` says which)."""
        body_encoding: Literal["text", "base64"]
        try:
            body, body_encoding = self.body.decode("utf-8"), "text"
        except UnicodeDecodeError:
            body, body_encoding = base64.b64encode(self.body).decode("ascii"), "base64"
        return {
            "reason": self.reason,
            # Header values may be AMQP types JSON lacks (timestamps, bytes): shown as text.
            "headers": json.loads(json.dumps(self.headers, default=str)),
            "content_type": self.content_type,
            "content_encoding": self.content_encoding,
            "body": body,
            "body_encoding": body_encoding,
        }

    def matches(self, reason: str | None) -> bool:
        """Whether ``reason`` (``None``: any) is part of this letter's reason."""
        return reason is None or (self.reason is not None and reason in self.reason)


def list_dead_letters(settings: Settings, *, max_count: int | None = None) -> Iterator[DeadLetter]:
    """Yield the dead letters waiting (at most ``max_count``), oldest first, and leave them in
    place: every one is given back once the iteration ends (or is abandoned)."""
    with _taking(settings) as (_, messages):
        for number, message in enumerate(messages, start=1):
            yield DeadLetter.from_message(message)
            if max_count is not None and number >= max_count:
                return


def replay_dead_letters(
    settings: Settings,
    *,
    reason: str | None = None,
    max_count: int | None = None,
    dry_run: bool = False,
) -> int:
    """Move the dead letters whose reason contains ``reason`` (``None``: all), at most
    ``max_count``, back to the job queue byte for byte; returns how many matched (and, unless
    ``dry_run``, were moved). Letters that do not match stay where they were."""
    moved = 0
    with _taking(settings) as (connection, messages):
        producer = Producer(connection.default_channel)
        for message in messages:
            if max_count is not None and moved >= max_count:
                break
            letter = DeadLetter.from_message(message)
            if not letter.matches(reason):
                continue
            if not dry_run:
                _publish_to_job_queue(producer, letter)
                message.ack()
            moved += 1
    return moved


def _publish_to_job_queue(producer: Producer, letter: DeadLetter) -> None:
    # Bytes with a content type are sent as they are; the connection waits for the confirm.
    producer.publish(
        letter.body,
        exchange=JOB_EXCHANGE,
        routing_key=JOB_QUEUE,
        content_type=letter.content_type or FALLBACK_CONTENT_TYPE,
        content_encoding=letter.content_encoding or "binary",
        headers=letter.replay_headers(),
        delivery_mode=2,
        declare=[job_queue()],
        retry=False,
    )


@contextmanager
def _taking(settings: Settings) -> Iterator[tuple[Connection, Iterator[Message]]]:
    """The connection, and the dead letters waiting now, each taken unacknowledged; those not
    acknowledged by the caller are given back, in the order they were taken."""
    connection = connect(settings)
    failures = (OperationalError, OSError, *connection.connection_errors)
    taken: list[Message] = []
    try:
        connection.ensure_connection(max_retries=CONNECT_ATTEMPTS)
        channel = connection.channel()
        queue = dead_letter_queue()(channel)
        _, waiting, _ = queue.queue_declare()

        def messages() -> Iterator[Message]:
            for _ in range(waiting):
                message = queue.get(no_ack=False)
                if message is None:
                    return
                taken.append(message)
                yield message

        # The producer side (replay) publishes on the connection's default channel.
        yield connection, messages()
        for message in taken:
            if not message.acknowledged:
                message.requeue()
        channel.close()
    except failures as exc:
        # Whatever was taken and not acknowledged goes back when the connection closes.
        raise BrokerUnavailable(
            f"the broker cannot be reached: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        connection.release()
