"""The pieces of the end-to-end benchmark: a simulator, a fleet of worker processes on one broker,
a result consumer, and the measurements (CPU and RSS of the worker process tree, latency).

Everything runs on this machine and talks to 127.0.0.1 only; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import requests
from kombu.message import Message
from kombu.messaging import Consumer

from contract.settings import Settings
from contract.topology import connect, result_queue

REPO = Path(__file__).resolve().parents[1]
#: The bearer key the workers send; the simulator runs without ``--api-key`` and accepts any.
BENCH_API_KEY = "bench-key"
#: A clip the simulator knows: no download, no probe, so only the worker's path is measured.
BENCH_SOURCE = {"kind": "kling", "video_id": "kling-demo-video-1", "task_id": "kling-demo-task-1"}
#: The pool name that means ``kling-worker`` (threads made greenlets by gevent).
GREEN_POOL = "green"
#: How often the RSS sampler looks at the worker process tree.
RSS_SAMPLE_INTERVAL_S = 0.1


@dataclass
class Simulator:
    """``kling-api-sim`` as a subprocess (its own process, so its CPU is not the worker's)."""

    process: subprocess.Popen[str]
    base_url: str
    _session: requests.Session = field(default_factory=requests.Session)

    def stats(self) -> dict[str, Any]:
        response = self._session.get(self.base_url + "/_sim/stats", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        self._session.post(self.base_url + "/_sim/reset", timeout=10).raise_for_status()


@contextmanager
def running_simulator(latency_ms: float) -> Iterator[Simulator]:
    script = Path(sys.executable).parent / "kling-api-sim"
    process = subprocess.Popen(
        [str(script), "--host", "127.0.0.1", "--port", "0", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if match is None:
            raise RuntimeError(f"kling-api-sim did not start: {line!r}")
        sim = Simulator(process, match.group(1))
        sim._session.trust_env = False
        yield sim
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(frozen=True)
class WorkerSpec:
    """One configuration of the fleet on one node."""

    name: str
    pool: str
    concurrency: int
    processes: int = 1
    #: Extra ``celery worker`` options (for instance ``--without-gossip``).
    options: tuple[str, ...] = ()
    #: Extra environment for the workers.
    env: Mapping[str, str] = field(default_factory=dict)

    def entry_point(self) -> list[str]:
        """The module and options that start one worker (run with ``python -m``): ``kling-worker``
        for the pool named ``green``, else ``celery -A worker worker -P POOL``."""
        if self.pool == GREEN_POOL:
            return ["worker.command"]
        return ["celery", "-A", "worker", "worker", "-P", self.pool]


@dataclass
class Fleet:
    processes: list[psutil.Popen]
    logs: list[Path]

    def tree(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for process in self.processes:
            try:
                found.append(process)
                found.extend(process.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return found

    def cpu_s(self) -> float:
        """User and system CPU of every worker process and child so far."""
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)


def worker_env(settings: Settings, sim: Simulator, spec: WorkerSpec) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KLING_", "CELERY_", "WORKER_", "REDIS_", "S3_"))
    }
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "CELERY_BROKER_URL": settings.broker_url,
            "KLING_API_BASE_URL": f"{sim.base_url}/kling",
            "KLING_API_KEY": BENCH_API_KEY,
            "WORKER_CONCURRENCY": str(spec.concurrency),
            # The benchmark measures the worker, not the fleet cap: leave it far above use.
            "KLING_MAX_CONCURRENCY": str(10 * spec.concurrency * spec.processes),
            "METRICS_PORT": "0",
            "LOG_FORMAT": "text",
        }
    )
    env.update(spec.env)
    return env


@contextmanager
def running_fleet(settings: Settings, sim: Simulator, spec: WorkerSpec) -> Iterator[Fleet]:
    """``spec.processes`` × ``celery -A worker worker``, in a scratch folder (no ``.env``)."""
    scratch = Path(tempfile.mkdtemp(prefix="kling-bench-"))
    env = worker_env(settings, sim, spec)
    processes: list[psutil.Popen] = []
    logs: list[Path] = []
    try:
        for index in range(spec.processes):
            log = scratch / f"worker{index}.log"
            logs.append(log)
            command = [
                sys.executable,
                "-m",
                *spec.entry_point(),
                "-c",
                str(spec.concurrency),
                "-n",
                f"bench{index}-{spec.name}-{os.getpid()}@%h",
                "--loglevel",
                "INFO",  # as compose and Kubernetes run it: one outcome line per job
                *spec.options,
            ]
            with log.open("w") as out:
                processes.append(
                    psutil.Popen(
                        command, cwd=scratch, env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        yield Fleet(processes, logs)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except psutil.TimeoutExpired:
                for child in process.children(recursive=True):
                    child.kill()
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class Collected:
    """What the result consumer saw."""

    count: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    #: completed_at − submitted_at, seconds, one per result.
    latencies_s: list[float] = field(default_factory=list)


class ResultCollector:
    """Consumes the result queue in a thread (auto-ack, prefetch 2,000) and counts results."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.collected = Collected()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def __enter__(self) -> ResultCollector:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the result consumer did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self.collected.count < count:
                if self.error is not None:
                    raise RuntimeError(f"the result consumer failed: {self.error!r}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 1.0))
        return True

    def reset(self) -> None:
        with self._lock:
            self.collected = Collected()

    def _on_message(self, body: Any, message: Message) -> None:
        result = json.loads(message.body) if isinstance(body, bytes | str) else body
        now = time.perf_counter()
        submitted, completed = result.get("submitted_at"), result.get("completed_at")
        with self._lock:
            collected = self.collected
            if collected.count == 0:
                collected.first_at = now
            collected.count += 1
            collected.last_at = now
            status = str(result.get("status"))
            collected.statuses[status] = collected.statuses.get(status, 0) + 1
            if submitted and completed:
                collected.latencies_s.append(
                    (
                        datetime.fromisoformat(completed) - datetime.fromisoformat(submitted)
                    ).total_seconds()
                )
            self._lock.notify_all()

    def _run(self) -> None:
        try:
            self._consume()
        except Exception as exc:  # a broker restart, say: the waiting side reports it
            with self._lock:
                self.error = exc
                self._lock.notify_all()

    def _consume(self) -> None:
        with connect(self._settings) as connection:
            channel = connection.channel()
            consumer = Consumer(
                channel,
                queues=[result_queue()],
                callbacks=[self._on_message],
                accept=["json"],
                no_ack=True,
            )
            consumer.qos(prefetch_count=2000)
            with consumer:
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        connection.drain_events(timeout=0.5)
                    except TimeoutError:
                        continue


class RssSampler:
    """Samples the fleet's total RSS in a thread; ``peak_bytes`` is the largest seen."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL_S):
            self.peak_bytes = max(self.peak_bytes, self._fleet.rss_bytes())


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
