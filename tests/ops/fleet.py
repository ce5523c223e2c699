"""Real worker processes, ``kling-queue-exporter`` and ``kling-jobs`` for the fleet tests, on the
fleet virtual host and the shared-state Redis database."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from contract.settings import Settings
from contract.topology import purge_queues
from devstack.processes import (
    Process,
    free_port,
    process_env,
    running,
    wait_for_http,
    wait_for_worker,
    worker_command,
)
from simulator.testing import RunningSimulator
from tests.services import API_KEY

#: The console scripts of this virtual environment.
BIN = Path(sys.executable).parent


@dataclass
class Fleet:
    """What the fleet tests share: the broker, the store, the simulator and a work folder."""

    broker_url: str
    redis_url: str
    sim: RunningSimulator
    workdir: Path

    @property
    def settings(self) -> Settings:
        return Settings(_env_file=None, celery_broker_url=self.broker_url, redis_url=self.redis_url)

    def env(self, **settings: str) -> dict[str, str]:
        """The environment of every process of this fleet, plus ``settings``."""
        values = {
            "REDIS_URL": self.redis_url,
            "KLING_API_BASE_URL": f"{self.sim.base_url}/kling",
            "KLING_API_KEY": API_KEY,
            "KLING_TIMEOUT_SECONDS": "10",
            "KLING_BACKOFF_BASE_SECONDS": "0.01",
            "KLING_BACKOFF_MAX_SECONDS": "0.05",
            "LOG_FORMAT": "json",
        }
        values.update(settings)
        return process_env(self.broker_url, **values)

    def reset(self) -> None:
        """Empty queues, no shared state, a simulator back at its start-up faults."""
        purge_queues(self.settings)
        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        client.close()
        self.sim.reset()

    @contextmanager
    def workers(self, count: int, concurrency: int = 4, **settings: str) -> Iterator[list[Worker]]:
        """``count`` real ``celery -A worker worker`` processes, each with its metrics port."""
        with ExitStack() as stack:
            started = []
            for _ in range(count):
                node = f"fleet-{uuid.uuid4().hex[:8]}@localhost"
                port = free_port()
                env = self.env(
                    METRICS_PORT=str(port), WORKER_CONCURRENCY=str(concurrency), **settings
                )
                process = stack.enter_context(
                    running(
                        node.split("@")[0], worker_command(node, concurrency), env, self.workdir
                    )
                )
                started.append(Worker(process, node, f"http://127.0.0.1:{port}/metrics"))
            for worker in started:
                wait_for_worker(worker.process, self.broker_url, worker.node)
                wait_for_http(worker.process, worker.metrics_url, "kling_worker_unacked_jobs")
            yield started

    @contextmanager
    def exporter(
        self, cache_s: float = 0.2, expect: str = "kling_broker_probe_success 1.0", **settings: str
    ) -> Iterator[str]:
        """``kling-queue-exporter`` on a free port, once it serves ``expect``; yields its
        ``/metrics`` URL."""
        port = free_port()
        command = [
            str(BIN / "kling-queue-exporter"),
            f"--port={port}",
            f"--cache-seconds={cache_s}",
        ]
        url = f"http://127.0.0.1:{port}/metrics"
        with running("exporter", command, self.env(**settings), self.workdir) as process:
            wait_for_http(process, url, expect)
            yield url

    def kling_jobs(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        """Run the ``kling-jobs`` console script with this fleet's environment."""
        env = self.env(**settings)
        for name, value in settings.items():
            if value == "":
                env.pop(name)
        return subprocess.run(
            [str(BIN / "kling-jobs"), *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )


@dataclass
class Worker:
    process: Process
    node: str
    metrics_url: str


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    text = requests.get(url, timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
