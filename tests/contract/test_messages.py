"""A message body decoded by the AMQP client comes back as the bytes that were sent."""

from __future__ import annotations

from contract.messages import raw_body


def test_a_decoded_body_is_encoded_back_with_its_own_codec() -> None:
    sent = "café".encode("latin-1")

    assert raw_body(sent.decode("latin-1"), "latin-1") == sent
    assert raw_body("café", "utf-8") == "café".encode()


def test_bytes_and_unknown_encodings_stay_as_they_are() -> None:
    assert raw_body(b"\x80\x04K\x01.", "binary") == b"\x80\x04K\x01."
    assert raw_body("text", "binary") == b"text"
    assert raw_body("text", None) == b"text"
