"""Keeping secrets out of results, logs and Flower: signed URLs lose their signatures."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from contract.jobs import KlingVideo, S3Object, VideoUrl

#: Query parameters that carry a signature, a credential or a session token (S3 SigV2/V4,
#: CloudFront, Azure SAS, GCS), compared case-insensitively.
SECRET_QUERY_PARAMS = frozenset(
    {
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "signature",
        "awsaccesskeyid",
        "sig",
        "x-goog-signature",
        "x-goog-credential",
        "key-pair-id",
        "policy",
        "token",
    }
)
REDACTED = "REDACTED"
#: Lone surrogates: JSON can spell them, UTF-8 cannot carry them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` and with the value of every secret-bearing query
    parameter replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # unparseable: nothing of it can be shown safely
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    if parts.query:
        query = [
            (name, REDACTED if name.lower() in SECRET_QUERY_PARAMS else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="/:"))
    return urlunsplit(parts)


def redact_source(source: KlingVideo | S3Object | VideoUrl) -> KlingVideo | S3Object | VideoUrl:
    """The source as a result may echo it: a submitted signed URL loses its signature."""
    if isinstance(source, VideoUrl):
        redacted = redact_url(source.video_url)
        return (
            source if redacted == source.video_url else VideoUrl.model_construct(video_url=redacted)
        )
    return source


def redact_raw_source(source: dict[str, Any]) -> dict[str, Any]:
    """A best-effort echo of a source that failed validation: scalars only, URLs redacted, text
    that UTF-8 cannot carry (a lone surrogate) replaced."""
    cleaned: dict[str, Any] = {}
    for key, value in list(source.items())[:8]:
        name = _encodable(str(key)[:64])
        if isinstance(value, str):
            cleaned[name] = redact_url(_encodable(value[:4096]))
        elif value is None or isinstance(value, bool | int | float):
            cleaned[name] = value
    return cleaned


def _encodable(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)
