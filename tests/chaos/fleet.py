"""The chaos harness: real worker processes on a RabbitMQ virtual host and a Redis database of
their own, and tallies of what came out of them.

The processes are the ones operators run (``kling-worker``, as compose and Kubernetes start it,
by :mod:`devstack.processes`), so a ``kill -9`` or a broker restart hits what production runs.
Nothing here is shared with the integration tests' in-thread worker: it consumes the default
virtual host, these workers ``kling-chaos-test``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from contract.settings import Settings
from contract.topology import connect, dead_letter_queue, job_queue, purge_queues
from devstack.processes import (
    Process,
    ensure_vhost,
    free_port,
    process_env,
    running,
    wait_for_worker,
    worker_command,
)
from producers import Result, iter_results
from simulator.testing import RunningSimulator

#: Prefix of the virtual host of each chaos run.
CHAOS_VHOST = "kling-chaos-test"
#: Worker threads per chaos worker process (and so the most jobs one holds unacknowledged).
CHAOS_CONCURRENCY = 8
#: Longest wait for a broker or a Redis server to answer again after a restart.
RESTART_TIMEOUT_S = 90.0


def worker_settings(sim: RunningSimulator, api_key: str, **overrides: str) -> dict[str, str]:
    """Environment settings of a chaos worker: small timeouts and backoff, no metrics port."""
    values = {
        "KLING_API_BASE_URL": f"{sim.base_url}/kling",
        "KLING_API_KEY": api_key,
        "KLING_TIMEOUT_SECONDS": "5",
        "KLING_MAX_ATTEMPTS": "4",
        "KLING_BACKOFF_BASE_SECONDS": "0.05",
        "KLING_BACKOFF_MAX_SECONDS": "0.5",
        "ALLOW_HTTP_VIDEO_URLS": "true",
        "ALLOW_PRIVATE_VIDEO_HOSTS": "true",
        "WORKER_CONCURRENCY": str(CHAOS_CONCURRENCY),
        # Several workers (and the operations tests' one) may run at once: no fixed port.
        "METRICS_PORT": "0",
        "LOG_FORMAT": "json",
    }
    values.update(overrides)
    return values


@dataclass
class Fleet:
    """Worker processes of one chaos run, and the settings its producer and consumers use."""

    broker_url: str
    vhost: str
    settings: Settings
    env: dict[str, str]
    workdir: Path
    _stack: ExitStack
    workers: list[Process] = field(default_factory=list)

    def start_worker(
        self, *, concurrency: int = CHAOS_CONCURRENCY, wait: bool = True, **env_overrides: str
    ) -> Process:
        """Start one more worker process and (unless ``wait`` is false) wait until it answers a
        ping."""
        node = f"chaos-{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}@localhost"
        env = {**self.env, **env_overrides}
        process = self._stack.enter_context(
            running(
                node.split("@")[0], worker_command(node, concurrency, green=True), env, self.workdir
            )
        )
        if wait:
            wait_for_worker(process, self.broker_url, node)
        self.workers.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(process.log() for process in self.workers)

    def state(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["REDIS_URL"])


@contextmanager
def chaos_fleet(workdir: Path, worker_env: dict[str, str]) -> Iterator[Fleet]:
    """A virtual host and (unless ``worker_env`` names one) a Redis server of this run's own,
    so two test runs at once cannot take each other's jobs; every worker started through the
    fleet gets SIGTERM (then SIGKILL) at the end, and the virtual host is deleted."""
    vhost = f"{CHAOS_VHOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    broker_url = ensure_vhost(vhost)
    with ExitStack() as stack:
        stack.callback(_delete_vhost, vhost)
        if "REDIS_URL" not in worker_env:
            worker_env = {**worker_env, "REDIS_URL": stack.enter_context(RedisServer(workdir)).url}
        settings = Settings(
            _env_file=None,
            celery_broker_url=broker_url,
            allow_http_video_urls=True,
            allow_private_video_hosts=True,
        )
        purge_queues(settings)
        env = process_env(broker_url, **worker_env)
        yield Fleet(broker_url, vhost, settings, env, workdir, stack)


def _delete_vhost(vhost: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60, check=False
    )


def kill_hard(process: Process) -> None:
    """``kill -9``: no warm shutdown, no ack, no goodbye to the broker."""
    os.kill(process.popen.pid, signal.SIGKILL)
    process.popen.wait(timeout=30)


@dataclass
class Tally:
    """Results consumed from the result queue, counted per ``job_id``."""

    counts: Counter[str] = field(default_factory=Counter)
    results: dict[str, Result] = field(default_factory=dict)
    #: When each job's first result arrived (``time.monotonic()``).
    answered_at: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.counts.values() if n > 1)

    def missing(self, job_ids: set[str]) -> set[str]:
        return job_ids - set(self.results)

    def add(self, result: Result) -> None:
        self.counts[result.job_id] += 1
        self.results[result.job_id] = result
        self.answered_at.setdefault(result.job_id, time.monotonic())


def collect(
    settings: Settings,
    tally: Tally,
    *,
    until: Callable[[Tally], bool],
    timeout_s: float,
    alive: Callable[[], None] = lambda: None,
) -> bool:
    """Consume results into ``tally`` until ``until(tally)`` holds; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if until(tally):
            return True
        alive()
        for result in iter_results(settings, idle_timeout_s=0.3):
            tally.add(result)
            if until(tally) or time.monotonic() >= deadline:
                break
    return until(tally)


def settle(settings: Settings, tally: Tally, quiet_s: float = 1.5) -> None:
    """Consume whatever else arrives (late duplicates) until the queue stays quiet."""
    for result in iter_results(settings, idle_timeout_s=quiet_s):
        tally.add(result)


def every(job_ids: set[str]) -> Callable[[Tally], bool]:
    return lambda tally: not tally.missing(job_ids)


@dataclass(frozen=True)
class DeadLetter:
    body: bytes
    content_type: str | None
    headers: dict[str, Any]


def take_dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter now on the chaos dead-letter queue, removed from it.

    Read with the bare channel: kombu would try to decompress or decode what is not ours to.
    """
    taken: list[DeadLetter] = []
    with connect(settings) as connection:
        channel = connection.default_channel
        queue = dead_letter_queue()
        queue(channel).declare()
        while (raw := channel.basic_get(queue=queue.name, no_ack=True)) is not None:
            properties = raw.properties
            taken.append(
                DeadLetter(
                    body=raw.body if isinstance(raw.body, bytes) else str(raw.body).encode(),
                    content_type=properties.get("content_type"),
                    headers=dict(properties.get("application_headers") or {}),
                )
            )
    return taken


def queue_depth(settings: Settings) -> int:
    """Jobs ready on the chaos job queue (not counting those a worker holds)."""
    with connect(settings) as connection:
        declared = job_queue()(connection.default_channel).queue_declare(passive=True)
        return int(declared.message_count)


def unacked_jobs(vhost: str) -> int | None:
    """Jobs delivered to a worker and not yet acknowledged (``rabbitmqctl``), or None."""
    done = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_unacknowledged"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == job_queue().name and parts[1].isdigit():
            return int(parts[1])
    return None


def recorded_outcomes(client: redis.Redis) -> set[str]:
    """Job ids whose outcome the fleet has recorded (``worker.coordination.outcomes``)."""
    return {key.decode()[len("kling:job:") : -len(":outcome")] for key in _keys(client, "outcome")}


def leased_jobs(client: redis.Redis) -> set[str]:
    """Job ids a worker holds the lease of right now: their API call may be under way."""
    return {key.decode()[len("kling:job:") : -len(":lease")] for key in _keys(client, "lease")}


def lease_holders(client: redis.Redis) -> dict[str, str]:
    """Every job under lease now, and its holder (``host:pid:token``, see JobLease)."""
    found = _keys(client, "lease")
    holders = client.mget(found) if found else []
    return {
        key.decode()[len("kling:job:") : -len(":lease")]: (
            holder.decode() if isinstance(holder, bytes) else str(holder)
        )
        for key, holder in zip(found, holders, strict=True)
        if holder is not None
    }


def held_by(holders: dict[str, str], process: Process) -> set[str]:
    """The jobs whose lease ``process`` (a worker, threads pool: one process) holds."""
    return {
        job for job, holder in holders.items() if holder.rsplit(":", 2)[1] == str(process.popen.pid)
    }


def _keys(client: redis.Redis, kind: str) -> list[bytes]:
    return list(client.scan_iter(match=f"kling:job:*:{kind}", count=1000))


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = RESTART_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing answers on {host}:{port} after {timeout_s} s")


def restart_rabbitmq(down_s: float = 2.0) -> float:
    """Restart the RabbitMQ application (the node stays up); returns the seconds it was away.

    Every connection, on every virtual host, is closed: durable queues and persistent messages
    survive, unacknowledged deliveries go back to their queues.
    """
    started = time.monotonic()
    _rabbitmqctl("stop_app")
    time.sleep(down_s)
    _rabbitmqctl("start_app")
    wait_for_port(5672)
    _rabbitmqctl("await_startup")
    return time.monotonic() - started


def _rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", command], check=True, timeout=RESTART_TIMEOUT_S)


class RedisServer:
    """A throw-away ``redis-server`` of our own, so it can be restarted without touching the
    shared one; without persistence unless ``persistent`` (AOF, as docker-compose runs it)."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.persistent = persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self._workdir / f"redis-{self.port}.log").open("ab")
        with log:
            command = [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes" if self.persistent else "no",
                "--appendfilename", f"redis-{self.port}.aof",
                "--appenddirname", f"redis-{self.port}-aof", "--dir", str(self._workdir),
            ]  # fmt: skip
            self._popen = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout_s=30)

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        self._popen = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
