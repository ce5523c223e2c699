"""``kling-jobs demo``: the whole pipeline on this machine, with nothing configured.

It starts the API simulator and an S3 server (in this process), a real worker
(``celery -A worker worker`` in a child process, through :mod:`devstack.processes`) on the
embedded broker in a temporary folder, submits a mix of jobs and prints every result as it
arrives. Needs the ``demo`` extra.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import click
from celery import Celery
from pydantic import SecretStr

from contract.jobs import KlingVideo, S3Object, VideoUrl
from contract.names import JOB_QUEUE, TASK_NAME
from contract.results import Result
from contract.settings import Settings
from contract.topology import broker_transport, job_queue, transport_options
from devstack.local_s3 import LocalS3, running_s3_server, upload_files
from devstack.processes import Process, running, worker_command
from producers.consume import iter_results
from producers.producer import Producer

#: The simulator's key for the demo; any value works against a local simulator.
DEMO_API_KEY = "demo-key-not-secret"
#: Latency of the simulated API, so the progress is visible.
DEMO_LATENCY_MS = 400
PRIVATE_BUCKET, PUBLIC_BUCKET = "uploads", "public"
#: Variables of a user's environment that would point the demo away from its local stack.
FOREIGN_SETTINGS = ("CELERY_BROKER_URL", "REDIS_URL", "KLING_ACCESS_KEY", "KLING_SECRET_KEY")


@click.command()
@click.option("--timeout", "timeout_s", default=120.0, show_default=True, help="Seconds to wait.")
def command(timeout_s: float) -> None:
    """Run the whole pipeline on this machine with nothing configured.

    Starts the API simulator, a local S3 server with sample clips, the embedded broker and a
    worker; submits Kling, S3 and URL jobs plus one invalid job; prints each result.
    """
    sys.exit(run_demo(timeout_s=timeout_s))


def run_demo(*, timeout_s: float) -> int:
    """Run the demo; 0 when every submitted job got its result within ``timeout_s``."""
    from simulator.samples import SAMPLE_CLIPS, sample_clip_path
    from simulator.testing import running_simulator

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kling-demo-")))
        s3 = stack.enter_context(running_s3_server())
        s3_endpoint = s3.endpoint_url
        clips = [(f"clips/{c.filename}", sample_clip_path(n)) for n, c in SAMPLE_CLIPS.items()]
        upload_files(s3, PRIVATE_BUCKET, clips)
        upload_files(s3, PUBLIC_BUCKET, clips, public=True)
        sim = stack.enter_context(
            running_simulator(api_key=DEMO_API_KEY, latency_ms=DEMO_LATENCY_MS)
        )
        settings = Settings(
            _env_file=None,
            celery_broker_url=None,
            embedded_broker_dir=workdir / "broker",
            kling_api_base_url=f"{sim.base_url}/kling",
            kling_api_key=SecretStr(DEMO_API_KEY),
            s3_endpoint_url=s3_endpoint,
            allow_http_video_urls=True,
            allow_private_video_hosts=True,
        )
        say(f"API simulator   {sim.base_url}  (latency {DEMO_LATENCY_MS} ms)")
        say(f"S3 server       {s3_endpoint}  (sample clips in s3://{PRIVATE_BUCKET}/clips/)")
        say(f"Broker          embedded, files in {settings.embedded_broker_dir}")
        worker = stack.enter_context(start_worker(settings, s3, workdir))
        say(f"Worker          celery -A worker worker (pid {worker.popen.pid})\n")

        job_ids = submit_jobs(settings, s3_endpoint)
        results = collect(settings, job_ids, timeout_s)
        show(results)
        missing = [job_id for job_id in job_ids if job_id not in results]
        if missing:
            say(f"\nNo result within {timeout_s:g} s for: {', '.join(missing)}")
            return 1
        say(f"\nAll {len(job_ids)} jobs ended in exactly one result each.")
        return 0
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def submit_jobs(settings: Settings, s3_endpoint: str) -> list[str]:
    """Submit the demo's mix: a Kling clip, S3 objects, a hosted URL, and broken jobs."""
    jobs: list[tuple[str, KlingVideo | S3Object | VideoUrl, str]] = [
        (
            "demo-kling",
            KlingVideo(video_id="kling-demo-video-1", task_id="kling-demo-task-1"),
            "a clip Kling generated",
        ),
        (
            "demo-s3-mp4",
            S3Object(bucket=PRIVATE_BUCKET, key="clips/valid_mp4.mp4"),
            "S3 object, presigned by the worker",
        ),
        (
            "demo-s3-mov",
            S3Object(bucket=PRIVATE_BUCKET, key="clips/valid_mov.mov"),
            "S3 object (MOV)",
        ),
        (
            "demo-url",
            VideoUrl(video_url=f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/valid_60fps.mp4"),
            "hosted URL",
        ),
        (
            "demo-too-short",
            S3Object(bucket=PRIVATE_BUCKET, key="clips/too_short.mp4"),
            "a 1.5 s clip: the pre-flight stops it, no call",
        ),
        (
            "demo-missing",
            S3Object(bucket=PRIVATE_BUCKET, key="clips/missing.mp4"),
            "an S3 object that does not exist",
        ),
    ]
    with Producer(settings) as producer:
        for job_id, source, what in jobs:
            producer.submit(source, job_id=job_id, metadata={"demo": what})
            say(f"submitted {job_id:<16} {what}")
    # A producer that skips validation (another language, an old client) sends a job with both
    # inputs: the worker answers it with an invalid_job result instead of dropping it.
    invalid = {
        "job_id": "demo-invalid",
        "source": {"kind": "kling", "video_id": "v1", "video_url": "https://example.com/a.mp4"},
    }
    raw_sender(settings).send_task(TASK_NAME, kwargs={"job": invalid}, task_id="demo-invalid")
    say(f"submitted {'demo-invalid':<16} both video_id and video_url: breaks the contract")
    return [job_id for job_id, _, _ in jobs] + ["demo-invalid"]


def collect(settings: Settings, job_ids: list[str], timeout_s: float) -> dict[str, Result]:
    results: dict[str, Result] = {}
    deadline = time.monotonic() + timeout_s
    say("")
    while len(results) < len(job_ids) and time.monotonic() < deadline:
        for result in iter_results(settings, idle_timeout_s=1.0):
            results[result.job_id] = result
            say(f"result {len(results)}/{len(job_ids)}: {result.job_id} {result.status}")
            if len(results) == len(job_ids):
                break
    return results


def show(results: dict[str, Result]) -> None:
    say("\nResults:")
    for result in results.values():
        if result.succeeded and result.video is not None:
            video = result.video
            detail = (
                f"session {result.session_id}  {video.duration_ms} ms "
                f"{video.width}x{video.height} @{video.fps:g} fps"
            )
        else:
            assert result.error is not None
            detail = f"{result.error.type}: {result.error.message}"
        say(f"  {result.job_id:<16} {result.status:<10} {detail}")
    say("\nAs JSON lines (what `kling-jobs results` prints):")
    for result in results.values():
        say(result.to_json())


def start_worker(settings: Settings, s3: LocalS3, workdir: Path) -> AbstractContextManager[Process]:
    """``celery -A worker worker`` in a child process, configured only through its environment.

    Its own folder is its working directory, so no ``.env`` of the user's is read; its output
    goes to the terminal with the demo's (warnings only).
    """
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
    env.update({name: value for name, value in s3.env.items() if name not in env})
    env.update(
        {
            "EMBEDDED_BROKER_DIR": str(settings.embedded_broker_dir),
            "KLING_API_BASE_URL": settings.kling_api_base_url,
            "KLING_API_KEY": DEMO_API_KEY,
            "S3_ENDPOINT_URL": s3.endpoint_url,
            "ALLOW_HTTP_VIDEO_URLS": "true",
            "ALLOW_PRIVATE_VIDEO_HOSTS": "true",
            "WORKER_CONCURRENCY": "8",
        }
    )
    return running(
        "worker", worker_command(concurrency=8, log_level="WARNING"), env, workdir, log=None
    )


def raw_sender(settings: Settings) -> Any:
    """A bare Celery client on the same broker, for the demo's hand-made invalid job."""
    return Celery(
        "demo-sender",
        broker=settings.broker_url,
        broker_transport=broker_transport(settings),
        broker_transport_options=transport_options(settings),
        task_routes={TASK_NAME: {"queue": JOB_QUEUE}},
        task_queues=[job_queue()],
        set_as_current=False,
    )


def say(line: str) -> None:
    print(line, flush=True)
