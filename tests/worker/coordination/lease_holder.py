"""A worker stand-in that holds leases and renews them until it is killed.

    python tests/worker/coordination/lease_holder.py --redis-url URL --prefix P \
        --jobs N --slots M --lease-s S

Takes the leases of ``N`` jobs (``{prefix}-job-{n}``) through :class:`RedisOutcomeStore` and
``M`` call slots through :class:`RedisLimiter`, all renewed by one :class:`LeaseRenewer` as in a
worker process, prints ``held`` and sleeps until killed (a worker dying mid-call).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from worker.coordination.limits_redis import RedisLimiter
from worker.coordination.outcomes_redis import RedisOutcomeStore
from worker.coordination.renewal import LeaseRenewer, tick_s_for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--slots", type=int, default=0)
    parser.add_argument("--lease-s", type=float, required=True)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    renewer = LeaseRenewer(client, tick_s=tick_s_for(args.lease_s))
    store = RedisOutcomeStore(client, renewer=renewer)
    limiter = RedisLimiter(
        client,
        max_concurrency=max(1, args.slots),
        lease_s=args.lease_s,
        key_prefix=f"{args.prefix}:limits",
        renewer=renewer,
    )
    for n in range(args.jobs):
        claim = store.claim(f"{args.prefix}-job-{n}", f"holder-{n}", args.lease_s)
        assert claim.granted, claim
    slots = [limiter.slot() for _ in range(args.slots)]
    for slot in slots:
        slot.__enter__()
    renewer.start()
    print("held", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()
