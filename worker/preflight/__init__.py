"""Pre-flight: ``url`` and ``s3`` clips are probed with ranged reads before any call, and the
ones that break the clip rules fail without one (docs/preflight.md).

reader (ranged reads), probe (PyAV: the facts, and the rules certainly broken), check (the
:class:`Preflight` a worker process holds, and the errors it raises).
"""

from worker.preflight.check import Preflight, PreflightPass
from worker.preflight.reader import ReadLimits

__all__ = ["Preflight", "PreflightPass", "ReadLimits"]
