"""One run of the whole fleet as an operator would start it, shared by the operations tests.

Given a real worker process (``kling-worker`` as compose runs it: JSON logs, metrics exporter,
task events in batches) and a real Flower process (basic auth, persistence) on a RabbitMQ
virtual host of their own, the simulator and S3 over HTTP, when five jobs are submitted and
their results consumed, the tests read what Flower, the exporter and the log hold about them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from contract.settings import Settings
from contract.topology import purge_queues
from devstack.processes import (
    Process,
    ensure_vhost,
    free_port,
    process_env,
    running,
    wait_for_http,
    wait_for_worker,
    worker_command,
)
from producers import KlingVideo, Producer, Result, S3Object, VideoUrl, iter_results
from simulator.samples import SAMPLE_CLIPS
from simulator.testing import RunningSimulator
from tests.ops.fleet import Fleet
from tests.ops.processes import (
    FLEET_VHOST,
    FLOWER_PASSWORD,
    FLOWER_USER,
    OPS_VHOST,
    flower_command,
)
from tests.services import API_KEY, PUBLIC_BUCKET, SAMPLES_BUCKET, STATE_REDIS_URL

#: A query that looks like a presigned URL's: its values must never reach Flower or a log.
SIGNED_QUERY = "X-Amz-Credential=AKIAOPSTEST%2F20260101&X-Amz-Signature=deadbeef0123456789"
#: How long the run may take to deliver every result and for Flower to see every task end.
RUN_TIMEOUT_S = 60.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    text = requests.get(url, timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class OpsRun:
    settings: Settings
    worker: Process
    worker_node: str
    flower: Process
    flower_url: str
    flower_db: Path
    metrics_url: str
    job_ids: dict[str, str]
    results: dict[str, Result]
    metrics_before: Samples
    metrics_after: Samples

    def flower_api(self, path: str) -> requests.Response:
        return requests.get(self.flower_url + path, auth=(FLOWER_USER, FLOWER_PASSWORD), timeout=10)


@pytest.fixture(scope="session")
def ops_broker_url(rabbitmq_url: str) -> str:
    return ensure_vhost(OPS_VHOST)


@pytest.fixture(scope="session")
def ops_run(
    ops_broker_url: str,
    api_sim: RunningSimulator,
    s3_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OpsRun]:
    workdir = tmp_path_factory.mktemp("ops")
    settings = Settings(
        _env_file=None,
        celery_broker_url=ops_broker_url,
        allow_http_video_urls=True,
        allow_private_video_hosts=True,
    )
    purge_queues(settings)
    metrics_port, flower_port = free_port(), free_port()
    node = f"ops-{uuid.uuid4().hex[:8]}@localhost"
    worker_env = process_env(
        ops_broker_url,
        KLING_API_BASE_URL=f"{api_sim.base_url}/kling",
        KLING_API_KEY=API_KEY,
        KLING_TIMEOUT_SECONDS="10",
        KLING_BACKOFF_BASE_SECONDS="0.01",
        KLING_BACKOFF_MAX_SECONDS="0.05",
        S3_ENDPOINT_URL=s3_endpoint,
        ALLOW_HTTP_VIDEO_URLS="true",
        ALLOW_PRIVATE_VIDEO_HOSTS="true",
        WORKER_CONCURRENCY="4",
        METRICS_PORT=str(metrics_port),
        LOG_FORMAT="json",
    )
    flower_env = process_env(ops_broker_url, FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}")
    flower_db = workdir / "flower.db"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    flower_url = f"http://127.0.0.1:{flower_port}"

    with (
        running("worker", worker_command(node, green=True), worker_env, workdir) as worker,
        running("flower", flower_command(flower_port, flower_db), flower_env, workdir) as flower,
    ):
        wait_for_worker(worker, ops_broker_url, node)
        wait_for_http(worker, metrics_url, "kling_jobs")
        # Flower's event consumer is up once it has seen the worker's heartbeat.
        wait_for_http(flower, f"{flower_url}/metrics", f'flower_worker_online{{worker="{node}"}} 1')

        api_sim.reset()
        api_sim.add_video("vid-ops", "task-ops", duration_ms=5000)
        # The first call answers 5000 (server error): one retry, then a normal answer.
        api_sim.set_faults(script=["kling:5000"])
        valid = SAMPLE_CLIPS["valid_mp4"].filename
        sources: dict[str, KlingVideo | S3Object | VideoUrl] = {
            "s3": S3Object(bucket=SAMPLES_BUCKET, key=f"clips/{valid}"),
            "missing": S3Object(bucket=SAMPLES_BUCKET, key="clips/missing.mp4"),
            "signed_url": VideoUrl(
                video_url=f"{s3_endpoint}/{PUBLIC_BUCKET}/clips/{valid}?{SIGNED_QUERY}"
            ),
            "kling": KlingVideo(video_id="vid-ops", task_id="task-ops"),
        }
        metrics_before = scrape(metrics_url)
        with Producer(settings) as producer:
            job_ids = {
                name: producer.submit(source, metadata={"case": name})
                for name, source in sources.items()
            }
        results = collect_results(settings, set(job_ids.values()))
        run = OpsRun(
            settings=settings,
            worker=worker,
            worker_node=node,
            flower=flower,
            flower_url=flower_url,
            flower_db=flower_db,
            metrics_url=metrics_url,
            job_ids=job_ids,
            results={name: results[job_id] for name, job_id in job_ids.items()},
            metrics_before=metrics_before,
            metrics_after=scrape(metrics_url),
        )
        wait_for_flower(run)
        yield run
    api_sim.reset()


def collect_results(settings: Settings, job_ids: set[str]) -> dict[str, Result]:
    found: dict[str, Result] = {}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while job_ids - set(found) and time.monotonic() < deadline:
        for result in iter_results(settings, idle_timeout_s=0.5):
            found[result.job_id] = result
    assert not job_ids - set(found), f"no result for {sorted(job_ids - set(found))}"
    return found


def celery_state(result: Result) -> str:
    """The state Flower shows for a job's task run: FAILURE for a failed job, else SUCCESS."""
    return "SUCCESS" if result.succeeded else "FAILURE"


def wait_for_flower(run: OpsRun) -> None:
    """Until Flower has seen every job's task finish."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    tasks: dict[str, dict[str, object]] = {}
    expected = {run.job_ids[name]: celery_state(result) for name, result in run.results.items()}
    while time.monotonic() < deadline:
        tasks = run.flower_api("/api/tasks").json()
        if all(tasks.get(job_id, {}).get("state") == state for job_id, state in expected.items()):
            return
        time.sleep(0.3)
    pytest.fail(f"Flower did not see every task end: {tasks}")


@pytest.fixture(scope="session")
def fleet_broker_url(rabbitmq_url: str) -> str:
    return ensure_vhost(FLEET_VHOST)


@pytest.fixture
def fleet(
    fleet_broker_url: str, redis_url: str, api_sim: RunningSimulator, tmp_path: Path
) -> Iterator[Fleet]:
    """A fresh fleet: empty queues on the fleet vhost, no shared state, a clean simulator."""
    found = Fleet(fleet_broker_url, STATE_REDIS_URL, api_sim, tmp_path)
    found.reset()
    yield found
    api_sim.reset()
