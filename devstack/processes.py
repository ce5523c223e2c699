"""Real processes of the stack (``celery -A worker worker``, Flower, the simulator) as an
operator starts them, configured only through their environment: for the demo, the tests and the
benchmarks.

Failures are raised, not reported: :class:`ProcessExited` (an ``AssertionError``, so a test that
meets one fails with the process's log) and :class:`ServiceUnavailable` (a local service the
stack needs is missing; tests turn it into a skip, or a failure under CI).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import requests
from celery import Celery

from devstack.local_s3 import LOCAL_AWS_ENV

#: The repository root: the processes import the project from here.
ROOT = Path(__file__).resolve().parents[1]
#: How long a process may take to come up.
START_TIMEOUT_S = 60.0
#: How long a process may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0


class ProcessExited(AssertionError):
    """Raised when a process of the stack exits, or does not come up, when it should be serving."""


class ServiceUnavailable(RuntimeError):
    """Raised when a local service the stack needs (RabbitMQ's ``rabbitmqctl``) is not there."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ensure_vhost(vhost: str) -> str:
    """Create ``vhost`` on the local RabbitMQ (guest may use it); returns its broker URL."""
    commands = [
        ["rabbitmqctl", "-q", "add_vhost", vhost],
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
    ]
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            _unavailable(f"cannot run {command[0]}: {exc}")
        if done.returncode != 0 and "already_exists" not in done.stderr + done.stdout:
            _unavailable(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


def _unavailable(message: str) -> None:
    raise ServiceUnavailable(message)


def process_env(broker_url: str, **settings: str) -> dict[str, str]:
    """A clean environment: none of our settings from the caller, local S3 keys, ``settings``."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update(LOCAL_AWS_ENV)
    env.update({"PYTHONPATH": str(ROOT), "CELERY_BROKER_URL": broker_url, **settings})
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None

    def log(self) -> str:
        if self.log_path is None:
            return "(output went to the terminal)"
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise ProcessExited(
                f"{self.name} exited ({self.popen.returncode}):\n{self.log()[-4000:]}"
            )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextmanager
def running(
    name: str,
    command: list[str],
    env: Mapping[str, str],
    workdir: Path,
    *,
    log: Path | Literal["file"] | None = "file",
) -> Iterator[Process]:
    """Start ``command`` in ``workdir``; SIGTERM and wait at the end.

    Its output goes to ``workdir/<name>.log`` (``log="file"``), to another file, or (``None``)
    to this process's own output.
    """
    log_path = workdir / f"{name}.log" if log == "file" else log
    if log_path is None:
        popen = subprocess.Popen(command, env=dict(env), cwd=workdir)
    else:
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                command, env=dict(env), cwd=workdir, stdout=out, stderr=subprocess.STDOUT
            )
    process = Process(name, popen, log_path)
    try:
        yield process
    finally:
        process.stop()


def worker_command(
    node: str | None = None,
    concurrency: int | None = 4,
    log_level: str = "INFO",
    *,
    green: bool = False,
) -> list[str]:
    """``celery -A worker worker`` as an operator types it (``node``: its ``-n`` name), or with
    ``green`` ``kling-worker``, as compose and Kubernetes run it (same options, gevent).
    ``concurrency`` None: the command's own default."""
    if green:
        command = [sys.executable, "-m", "worker.command"]
    else:
        command = [sys.executable, "-m", "celery", "--quiet", "-A", "worker", "worker"]
    if node:
        command += ["-n", node]
    command += ["-l", log_level]
    return command if concurrency is None else [*command, "-c", str(concurrency)]


def wait_for_worker(process: Process, broker_url: str, node: str) -> None:
    """Until ``node`` answers a ping through the broker."""
    client = Celery("ops-tests", broker=broker_url, set_as_current=False)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            process.check_alive()
            if client.control.ping(destination=[node], timeout=1.0):
                return
        raise ProcessExited(
            f"{node} did not answer within {START_TIMEOUT_S} s:\n{process.log()[-4000:]}"
        )
    finally:
        client.close()


def wait_for_http(process: Process, url: str, expect: str = "") -> str:
    """Until ``url`` answers 200 (with ``expect`` in its body); returns the body."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200 and expect in response.text:
                return response.text
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise ProcessExited(f"{url} did not answer with {expect!r}:\n{process.log()[-4000:]}")
