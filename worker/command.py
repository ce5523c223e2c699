"""``kling-worker``: the worker as a fleet runs it, thousands of calls in flight per process.

It takes the same options as ``celery worker`` and runs ``celery -A worker worker`` after making
every blocking library cooperative with gevent: each job's thread becomes a greenlet, so a
process holds thousands of slow init-selection calls for a few KB each, where OS threads cost
memory and GIL switching (docs/performance.md). The pool stays the project's own
(:mod:`worker.pool`, a delayed job starts first); only the threads under it change.

gevent must patch the standard library before ``socket``, ``ssl`` or ``threading`` are imported
by anything (Celery, kombu, redis-py, urllib3, boto3), which a setting read later cannot do:
hence a command of its own, and ``celery -A worker worker`` keeps plain threads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: Greenlets per process when neither ``-c`` nor ``WORKER_CONCURRENCY`` says otherwise: a
#: greenlet waiting on a socket costs a few KB, so the fleet cap, not the process, bounds calls.
GREEN_CONCURRENCY = 2000


def main(argv: Sequence[str] | None = None) -> None:
    from gevent import monkey

    monkey.patch_all()
    # Imported only now that sockets, locks and threads are gevent's.
    from celery.__main__ import main as celery_main

    from contract.settings import Settings

    args = list(sys.argv[1:] if argv is None else argv)
    if "worker_concurrency" not in Settings().model_fields_set:
        os.environ["WORKER_CONCURRENCY"] = str(GREEN_CONCURRENCY)
    sys.argv = ["kling-worker", "-A", "worker.app:app", "worker", *args]
    celery_main()


if __name__ == "__main__":
    main()
