"""A worker stand-in for the limiter tests: threads calling the simulator through a RedisLimiter.

    python -m tests.worker.coordination.hammer --redis-url URL --endpoint URL --cap N [--rate R] ...

Run as a separate process, several at once, so the limits are proven across processes. Slots go
back pipelined, as in a worker process. Prints one JSON line with what it saw. With
``--hold N`` it instead takes N slots, prints ``held``, and sleeps until killed (a crashed
worker).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import redis
import requests
from requests.adapters import HTTPAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from worker.coordination.limits_redis import RedisLimiter
from worker.coordination.pipelining import PipelinedCommands
from worker.errors import UpstreamBusy

#: The body of every call: a clip the simulator knows, so no download is involved.
BODY = {"video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add = parser.add_argument
    add("--redis-url", required=True)
    add("--prefix", required=True, help="Redis key prefix of the limiter")
    add("--endpoint", default="", help="init-selection URL of the simulator")
    add("--api-key", default="load-test")
    add("--cap", type=int, required=True)
    add("--rate", type=float, default=None)
    add("--lease-s", type=float, default=30.0)
    add("--threads", type=int, default=8)
    add("--duration-s", type=float, default=3.0)
    add("--start-at", type=float, default=0.0, help="wall-clock time to start calling at")
    add("--hold", type=int, default=0, help="take this many slots and sleep until killed")
    return parser


def main() -> None:
    args = _parser().parse_args()
    client = redis.Redis.from_url(args.redis_url)
    commands = PipelinedCommands(client)
    limiter = RedisLimiter(
        client,
        max_concurrency=args.cap,
        max_rate=args.rate,
        lease_s=args.lease_s,
        key_prefix=args.prefix,
        commands=commands,
    )
    if args.hold:
        slots = [limiter.slot() for _ in range(args.hold)]
        for slot in slots:
            slot.__enter__()
        print("held", flush=True)
        time.sleep(3600)
        return

    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_maxsize=args.threads)
    session.mount("http://", adapter)
    headers = {"Authorization": f"Bearer {args.api_key}"}
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    time.sleep(max(0.0, args.start_at - time.time()))
    deadline = time.monotonic() + args.duration_s

    def call() -> int:
        with limiter.slot():
            response = session.post(args.endpoint, json=BODY, headers=headers, timeout=10)
            if response.status_code == 429:
                # As the pipeline does: the slot learns from the exception that the account is full.
                raise UpstreamBusy("busy", http_status=429)
            return response.status_code

    def work() -> None:
        while time.monotonic() < deadline:
            try:
                status = call()
            except UpstreamBusy:
                status = 429
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    commands.close()
    print(
        json.dumps(
            {
                "statuses": {str(code): n for code, n in statuses.items()},
                "acquired": limiter.stats.acquired,
                "busy_answers": limiter.stats.busy_answers,
                "max_wait_s": limiter.stats.max_wait_s,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
