"""Whether an MP4/MOV file has a ``moov`` box at all, from its top-level box headers.

Every ISO BMFF file is a run of boxes, each opening with its size and type (a size of 1: a
64-bit ``largesize`` follows; 0: the box runs to the end of the file). Without a ``moov``
nothing can be played. When the whole file's length is known, walking the headers from byte 0
tells whether one is there: a box that claims to run past the end (the ``mdat`` of an upload
cut short), or boxes that end at the end of the file, with no ``moov`` among them, mean none is.

Only the headers are read, through the probe's reader: mostly from bytes it already holds, else
one small ranged read each, within its budget.
"""

from __future__ import annotations

import struct

from worker.preflight.reader import ClipReader

_HEADER = struct.Struct(">I4s")
_LARGESIZE = struct.Struct(">Q")
#: Most top-level boxes walked; a file of more is not judged.
MAX_BOXES = 1024


def lacks_moov(reader: ClipReader) -> bool:
    """True when the file certainly has no top-level ``moov`` box.

    False whenever that cannot be told: the size unknown, a header that makes no sense (a size
    under the header's own), a ``moov`` found, too many boxes, or the reader failed (its
    ``failure`` then says why: over its budget, a host that ignores Range, ...).
    """
    size = reader.size
    if not size:
        return False
    offset = 0
    for _ in range(MAX_BOXES):
        if offset >= size:
            return True  # the boxes end where the file does
        box_size = _box_size(reader, offset, size)
        if box_size is None:
            return False
        if box_size < 0:
            return True
        offset += box_size
    return False


def _box_size(reader: ClipReader, offset: int, file_size: int) -> int | None:
    """The length of the box at ``offset``; -1 when nothing after it can be a ``moov`` (it is
    cut off by the end of the file, or runs to it), None when the walk must stop undecided."""
    reader.seek(offset)
    header = reader.read(_HEADER.size + _LARGESIZE.size)
    if reader.failure is not None:
        return None
    if len(header) < _HEADER.size:
        return -1  # a header cut off by the end of the file
    box_size, kind = _HEADER.unpack_from(header)
    if kind == b"moov":
        return None
    if box_size == 1:
        if len(header) < _HEADER.size + _LARGESIZE.size:
            return -1
        (box_size,) = _LARGESIZE.unpack_from(header, _HEADER.size)
        minimum = _HEADER.size + _LARGESIZE.size
    elif box_size == 0:
        return -1  # to the end of the file, and not a moov
    else:
        minimum = _HEADER.size
    if box_size < minimum:
        return None
    return -1 if offset + box_size > file_size else int(box_size)
