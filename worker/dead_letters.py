"""Dead letters: a message that is not a job at all is set aside byte for byte, never dropped.

Celery's consumer logs and acks (drops) a message it cannot decode, and rejects one it does not
know. :class:`DeadLetteringConsumer` replaces those four hooks: the original body, content type
and headers go to ``kling.init_selection.dead`` with the reason in ``x-dead-letter-reason``, and
only then is the message acked. The body is never deserialized beyond JSON (Celery's
``accept_content`` refuses everything else before it reaches us) and never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

from contract import bounded_json

logger = logging.getLogger(__name__)

#: Largest task message read: a job is at most a few tens of kilobytes (16 KiB of metadata).
MAX_TASK_MESSAGE_BYTES = 1024 * 1024
#: What Celery raises for a task body of the wrong shape; connection errors are not among them.
MALFORMED_MESSAGE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, with every message it cannot run sent to the dead-letter queue."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Celery's handler, guarded: a JSON body that is not shaped like a task (``"a string"``,
        ``[[], null, {}]``) passes Celery's checks on receipt and fails later, in the pool, where
        it ends as neither a result nor a dead letter; it is dead-lettered on receipt instead."""
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            problem = task_shape_problem(message)
            if problem is not None:
                return self._dead_letter(message, problem)
            try:
                return handle(message)
            except self.connection_errors + self.channel_errors:
                raise  # the consumer reconnects; the message comes back
            except MALFORMED_MESSAGE_ERRORS as exc:
                return self._dead_letter(
                    message, f"malformed task message: {type(exc).__name__}: {exc}"
                )
            except Exception as exc:
                # Anything else Celery raised for this message would stop the consumer, and the
                # message, still unacked, would stop the next worker too: set it aside.
                return self._dead_letter(
                    message, f"task message cannot be read: {type(exc).__name__}"
                )

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"cannot decode the message: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "not a Celery task message (no task name)")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = _header(message, "task")
        self._dead_letter(message, f"unknown task name {name!r}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {type(exc).__name__}: {exc}")

    def _dead_letter(self, message: Any, reason: str) -> None:
        # Cut the reason short: it travels as a header, and exceptions may quote the body.
        reason = reason[:500]
        try:
            self.app.runtime.publisher.publish_dead_letter(message, reason)
        except Exception:
            # Back to the queue: the broker keeps it until a dead letter can be written.
            logger.exception("Could not dead-letter a message (%s); returning it.", reason)
            message.reject_log_error(logger, self.connection_errors, requeue=True)
            return
        logger.warning(
            "Dead-lettered a message (delivery tag %s): %s",
            message.delivery_info.get("delivery_tag"),
            reason,
        )
        message.ack_log_error(logger, self.connection_errors)


def task_shape_problem(message: Any) -> str | None:
    """Why a JSON task message cannot be run, or ``None`` to let Celery judge it.

    Protocol 2 needs JSON, a task id and a body ``[args: list, kwargs: object, embed: object |
    null]``. Any other content type is refused here, before anything tries to decode it (a
    message with no content type would reach the task as raw bytes).
    """
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return None
    if message.content_type != "application/json":
        return f"content type {message.content_type!r} refused: workers accept JSON only"
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return "malformed task message: no task id"
    try:
        body = bounded_json.loads(
            message.body, max_depth=bounded_json.MAX_MESSAGE_DEPTH, max_bytes=MAX_TASK_MESSAGE_BYTES
        )
    except bounded_json.UnreadableJson as exc:
        return f"cannot decode the message: {exc}"
    shaped = (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and (body[2] is None or isinstance(body[2], dict))
    )
    return None if shaped else "malformed task message: body is not [args, kwargs, embed]"


def _header(message: Any, name: str) -> object:
    headers = message.headers
    return headers.get(name) if isinstance(headers, dict) else None
