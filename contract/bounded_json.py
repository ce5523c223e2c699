"""JSON read with bounds: what arrives from a broker or an HTTP peer is never trusted to be small,
shallow or finite.

``json.loads`` recurses once per nesting level and raises ``RecursionError`` (not a
``ValueError``) on a body a few kilobytes long, and reads ``1e999`` as infinity, which later
code cannot round or serialize. :func:`loads` refuses such bodies with :class:`UnreadableJson`, a
``ValueError``, before anything recurses into them; :func:`depth_exceeds` checks a value already
decoded (a job's ``metadata``) the same way, without recursion.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Deepest nesting of objects and arrays accepted in a job, a result or an API answer: far
#: beyond any real one, far below where ``json`` (about 1,000) or pydantic (about 255) give up.
MAX_DEPTH = 64
#: Deepest nesting of a whole message read off a queue: deeper than any job may be, so that a
#: job nested too deeply can still be read far enough to be answered ``invalid_job``.
MAX_MESSAGE_DEPTH = 512

#: Most digits of an integer: any more and it would not fit a float (about 1.8e308).
MAX_INT_DIGITS = 308

# Strings are skipped whole (their brackets are text); every other bracket opens or closes.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_OPENERS = frozenset(b"[{")


class UnreadableJson(ValueError):
    """Raised for a body that is not JSON within bounds: malformed, too deep, too large, or
    holding a number no float can hold."""


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, max_bytes: int | None = None) -> Any:
    """Decode ``data`` as JSON within the bounds; raises :class:`UnreadableJson` otherwise."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if max_bytes is not None and len(raw) > max_bytes:
        raise UnreadableJson(f"{len(raw)} bytes, more than the {max_bytes} accepted")
    if _nesting(raw) > max_depth:
        raise UnreadableJson(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(
            raw, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_float_sized
        )
    except RecursionError:  # pragma: no cover - the scan above bounds the depth
        raise UnreadableJson(f"nested deeper than {max_depth} levels") from None
    except UnreadableJson:
        raise
    except ValueError as exc:  # includes UnicodeDecodeError
        raise UnreadableJson(f"not JSON: {exc}") from None


def depth_exceeds(value: object, max_depth: int = MAX_DEPTH) -> bool:
    """Whether decoded ``value`` nests objects and arrays deeper than ``max_depth``."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth + 1 > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _nesting(raw: bytes) -> int:
    """The deepest bracket nesting of ``raw``, brackets inside strings left out. A malformed
    body may count oddly; ``json`` then refuses it."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if len(token) != 1:
            continue  # a string
        if token[0] in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> float:
    raise UnreadableJson(f"{name} is not a JSON number")


def _float_sized(text: str) -> int:
    # Past this many digits an integer no longer fits a float, which code reading it may need.
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise UnreadableJson(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise UnreadableJson(f"the number {text[:32]} is out of range")
    return number
