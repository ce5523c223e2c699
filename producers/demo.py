"""``kling-jobs demo``: the whole pipeline on this machine, with nothing configured.

It starts the API simulator and an S3 server (in this process), a real worker
(``celery -A worker worker`` in a child process) on the embedded broker in a temporary folder,
submits a mix of jobs and prints every result as it arrives. Needs the ``demo`` extra.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from celery import Celery
from pydantic import SecretStr

from producers.broker import job_queue, transport_options
from producers.consume import iter_results
from producers.jobs import KlingVideo, S3Object, VideoUrl
from producers.local_s3 import LOCAL_AWS_ENV, running_s3_server, upload_files
from producers.names import JOB_QUEUE, TASK_NAME
from producers.producer import Producer
from producers.results import Result
from producers.settings import Settings

#: The simulator's key for the demo; any value works against a local simulator.
DEMO_API_KEY = "demo-key-not-secret"
#: Latency of the simulated API, so the progress is visible.
DEMO_LATENCY_MS = 400
PRIVATE_BUCKET, PUBLIC_BUCKET = "uploads", "public"
#: Variables of a user's environment that would point the demo away from its local stack.
FOREIGN_SETTINGS = ("CELERY_BROKER_URL", "REDIS_URL", "KLING_ACCESS_KEY", "KLING_SECRET_KEY")


def run_demo(*, timeout_s: float) -> int:
    """Run the demo; 0 when every submitted job got its result within ``timeout_s``."""
    from simulator.samples import SAMPLE_CLIPS, sample_clip_path
    from simulator.testing import running_simulator

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kling-demo-")))
        s3_endpoint = stack.enter_context(running_s3_server())
        clips = [(f"clips/{c.filename}", sample_clip_path(n)) for n, c in SAMPLE_CLIPS.items()]
        upload_files(s3_endpoint, PRIVATE_BUCKET, clips)
        upload_files(s3_endpoint, PUBLIC_BUCKET, clips, public=True)
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
        )
        say(f"API simulator   {sim.base_url}  (latency {DEMO_LATENCY_MS} ms)")
        say(f"S3 server       {s3_endpoint}  (sample clips in s3://{PRIVATE_BUCKET}/clips/)")
        say(f"Broker          embedded, files in {settings.embedded_broker_dir}")
        worker = start_worker(settings, workdir)
        stack.callback(stop_worker, worker)
        say(f"Worker          celery -A worker worker (pid {worker.pid})\n")

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
            "a 1.5 s clip: the API rejects it",
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


def start_worker(settings: Settings, workdir: Path) -> subprocess.Popen[bytes]:
    """``celery -A worker worker`` in a child process, configured only through its environment."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
    env.update({name: value for name, value in LOCAL_AWS_ENV.items() if name not in env})
    env.update(
        {
            "EMBEDDED_BROKER_DIR": str(settings.embedded_broker_dir),
            "KLING_API_BASE_URL": settings.kling_api_base_url,
            "KLING_API_KEY": DEMO_API_KEY,
            "S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
            "ALLOW_HTTP_VIDEO_URLS": "true",
            "WORKER_CONCURRENCY": "8",
        }
    )
    command = [sys.executable, "-m", "celery", "--quiet", "-A", "worker", "worker", "-l", "WARNING"]
    # Its own folder as working directory, so no .env of the user's is read.
    return subprocess.Popen(command, env=env, cwd=workdir)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def raw_sender(settings: Settings) -> Any:
    """A bare Celery client on the same broker, for the demo's hand-made invalid job."""
    return Celery(
        "demo-sender",
        broker=settings.broker_url,
        broker_transport_options=transport_options(settings),
        task_routes={TASK_NAME: {"queue": JOB_QUEUE}},
        task_queues=[job_queue()],
        set_as_current=False,
    )


def say(line: str) -> None:
    print(line, flush=True)
