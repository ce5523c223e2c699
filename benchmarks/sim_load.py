"""Measure the simulator's calls/s with a fixed number of calls in flight (default 1,000).

    python benchmarks/sim_load.py [--calls 20000] [--in-flight 1000] [--url http://127.0.0.1:8000]

Without `--url` it starts `kling-api-sim --port 0` as a subprocess (its own core) and stops it
afterwards. Only loopback targets are allowed: this is a load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

PATH = "/kling/v1/videos/multi-elements/init-selection"
BODY = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}


async def _load(base_url: str, calls: int, in_flight: int) -> tuple[float, Counter[int]]:
    statuses: Counter[int] = Counter()
    remaining = iter(range(calls))
    connector = aiohttp.TCPConnector(limit=in_flight)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Authorization": "Bearer load-test"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for _ in remaining:
                async with session.post(base_url + PATH, json=BODY, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    return calls / elapsed, statuses


def _start_simulator() -> tuple[subprocess.Popen[str], str]:
    script = Path(sys.executable).parent / "kling-api-sim"
    process = subprocess.Popen([str(script), "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if match is None:
        process.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return process, match.group(1)


def main() -> None:
    """Run the load and print calls/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--url", help="a running simulator's base URL (loopback only)")
    args = parser.parse_args()
    process = None
    base_url = args.url
    if base_url is None:
        process, base_url = _start_simulator()
    if urlsplit(base_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("refusing to load a non-loopback host")
    try:
        asyncio.run(_load(base_url, min(1000, args.calls), args.in_flight))  # warm-up
        rate, statuses = asyncio.run(_load(base_url, args.calls, args.in_flight))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
    print(f"{args.calls} calls, {args.in_flight} in flight: {rate:,.0f} calls/s {dict(statuses)}")


if __name__ == "__main__":
    main()
