"""Pre-flight: ``url`` and ``s3`` clips are probed with ranged reads before any call, and the
ones that break the clip rules fail without one (docs/preflight.md).

reader (ranged reads), probe (PyAV: the facts, and the rules certainly broken), boxes (whether an
MP4 has a ``moov`` at all), check (the :class:`Preflight` a worker process holds, and the errors
it raises); connections, addresses (callers' hosts on public addresses only), deadline (the
probe's wall-clock bound) and budget (the bytes a process's probes may hold at once).
"""

from worker.preflight.addresses import ensure_public_host
from worker.preflight.budget import PREFLIGHT_BUFFER_BYTES
from worker.preflight.check import Preflight, PreflightPass
from worker.preflight.reader import ReadLimits

__all__ = [
    "PREFLIGHT_BUFFER_BYTES",
    "Preflight",
    "PreflightPass",
    "ReadLimits",
    "ensure_public_host",
]
