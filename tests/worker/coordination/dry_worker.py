"""A worker stand-in for the dry-account test: threads running jobs through a real Pipeline
whose accounts share their breakers and limiters in Redis.

    python -m tests.worker.coordination.dry_worker --redis-url URL --accounts-file PATH \
        --base-url URL --pinned-to NAME --pinned N [--url CLIP --unpinned N] [--threads N]

Run as a separate process, two at once, so the pause is proven across processes (the test of
the in-process breaker calls :func:`pipeline` and :func:`run_all` directly). Prints
``ready`` once its pipeline is built, starts on a line from stdin (so every process is under way
when the account runs dry), then prints one JSON line: each job's kind, status, error type and
account.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from contract.jobs import Job, KlingVideo, VideoUrl, make_job
from contract.settings import Settings
from worker.accounts import read_accounts_file
from worker.backoff import Backoff
from worker.coordination.store import Coordination
from worker.pipeline import Pipeline
from worker.runtime import account_pool
from worker.sources import SourceResolver

KLING = KlingVideo(video_id="kling-demo-video-1", task_id="kling-demo-task-1")
#: Each job's kind (``pinned`` or ``unpinned``), status, error type and account.
Outcomes = list[list[str | None]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add = parser.add_argument
    add("--redis-url", required=True)
    add("--accounts-file", type=Path, required=True)
    add("--base-url", required=True, help="Kling base URL of the simulator")
    add("--open-s", type=float, default=30.0, help="KLING_CIRCUIT_OPEN_SECONDS")
    add("--pinned-to", required=True, help="the account the pinned jobs name")
    add("--pinned", type=int, default=0, help="Kling jobs pinned to --pinned-to")
    add("--url", default="http://127.0.0.1/clip.mp4", help="hosted clip of the unpinned jobs")
    add("--unpinned", type=int, default=0, help="url jobs that any account may take")
    add("--threads", type=int, default=12)
    return parser


def pipeline(
    *,
    base_url: str,
    accounts_file: Path,
    open_s: float,
    threads: int,
    redis_url: str | None,
) -> Pipeline:
    """A real pipeline on the accounts of ``accounts_file``: shared through Redis with
    ``redis_url``, else within this process."""
    settings = Settings(
        _env_file=None,
        kling_api_base_url=base_url,
        kling_accounts_file=accounts_file,
        kling_timeout_seconds=10.0,
        kling_circuit_open_seconds=open_s,
        allow_http_video_urls=True,
        redis_url=redis_url,
        worker_concurrency=threads,
    )
    accounts = read_accounts_file(accounts_file, default_base_url=base_url)
    coordination = Coordination.from_settings(settings)
    coordination.start()
    return Pipeline(
        resolver=SourceResolver.from_settings(settings),
        accounts=account_pool(accounts, coordination, settings),
        backoff=Backoff(base_s=0.01, max_s=0.01),
        max_attempts=4,
    )


def jobs(*, pinned_to: str, pinned: int, url: str, unpinned: int) -> list[tuple[str, Job]]:
    """``pinned`` Kling jobs pinned to ``pinned_to`` and ``unpinned`` url jobs, interleaved
    (unpinned jobs queue behind the account while it runs dry, too)."""
    clip = VideoUrl(video_url=url)
    to_one = [("pinned", make_job(KLING, account=pinned_to)) for _ in range(pinned)]
    to_any = [("unpinned", make_job(clip, allow_http=True)) for _ in range(unpinned)]
    mixed = [job for pair in zip(to_one, to_any, strict=False) for job in pair]
    return mixed + to_one[len(to_any) :] + to_any[len(to_one) :]


def run_all(runner: Pipeline, kinds_and_jobs: list[tuple[str, Job]], threads: int) -> Outcomes:
    """Each job's kind, status, error type and account, ``threads`` jobs at a time."""

    def run(kind_and_job: tuple[str, Job]) -> list[str | None]:
        kind, job = kind_and_job
        result = runner.run(job).result
        error = result.error.type if result.error is not None else None
        return [kind, result.status, error, result.account]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(run, kinds_and_jobs))


def main() -> None:
    args = _parser().parse_args()
    runner = pipeline(
        base_url=args.base_url,
        accounts_file=args.accounts_file,
        open_s=args.open_s,
        threads=args.threads,
        redis_url=args.redis_url,
    )
    queued = jobs(
        pinned_to=args.pinned_to, pinned=args.pinned, url=args.url, unpinned=args.unpinned
    )
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(run_all(runner, queued, args.threads)), flush=True)


if __name__ == "__main__":
    main()
