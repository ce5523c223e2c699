"""Probe `video_url`s off the event loop, with a small cache keyed on the full URL.

The cache key is the whole URL, query string included: two presigned URLs of one object are two
entries (a fresh signature is downloaded again, as Kling would), while a load test that repeats
one URL probes it once. Concurrent probes of the same URL share one download. Download failures
are never cached, so an expired URL that is re-signed works on the next call.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from simulator.clip_probe import DownloadError, Probe, probe_url

#: Most URLs whose probe is remembered.
CACHE_SIZE = 1024
#: Longest a whole probe (all its downloads) may take.
PROBE_TIMEOUT_S = 60.0


class Prober:
    """Runs blocking probes in a thread pool; one per server, closed on shutdown."""

    def __init__(self, max_workers: int = 16) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="probe")
        self._cache: OrderedDict[str, Probe] = OrderedDict()
        self._pending: dict[str, asyncio.Future[Probe]] = {}

    async def probe(self, url: str) -> Probe:
        """The probe of `url`; raises DownloadError when it cannot be downloaded."""
        cached = self._cache.get(url)
        if cached is not None:
            self._cache.move_to_end(url)
            return cached
        pending = self._pending.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, probe_url, url)
        self._pending[url] = future
        try:
            result = await asyncio.wait_for(asyncio.shield(future), PROBE_TIMEOUT_S)
        except TimeoutError as exc:
            raise DownloadError(f"timed out after {PROBE_TIMEOUT_S:g} s") from exc
        finally:
            self._pending.pop(url, None)
        self._cache[url] = result
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def clear(self) -> None:
        """Forget cached probes."""
        self._cache.clear()

    def close(self) -> None:
        """Stop the pool; probes still running finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)
