"""Message bodies as the broker holds them."""

from __future__ import annotations


def raw_body(body: bytes | str, content_encoding: str | None) -> bytes:
    """The bytes of a message body as it was sent.

    The AMQP client decodes a body whose ``content_encoding`` names a codec (``utf-8``, ...) into
    text; encoding it back with the same codec gives the original bytes. A body that stayed bytes
    (``binary``, or no encoding) is already raw.
    """
    if isinstance(body, bytes):
        return body
    try:
        return body.encode(content_encoding or "utf-8")
    except LookupError:
        return body.encode("utf-8")
