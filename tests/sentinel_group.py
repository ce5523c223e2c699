"""A Redis primary, a replica and three Sentinels on loopback, as real processes, for tests that
kill the primary and watch the store follow the Sentinels to the promoted replica."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from devstack.processes import free_port

MASTER_NAME = "mymaster"
#: How long a Sentinel waits before it calls the primary down (ms): short, for a quick test.
DOWN_AFTER_MS = 1000
STARTUP_TIMEOUT_S = 30.0


@dataclass
class SentinelGroup:
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]]

    @property
    def sentinels(self) -> str:
        """The group as ``REDIS_SENTINELS`` names it."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def kill_primary(self) -> None:
        process = self.processes[self.primary_port]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def primary_now(self) -> int | None:
        """The port the Sentinels name as primary, or ``None`` while they do not agree yet."""
        ports = set()
        for port in self.sentinel_ports:
            with redis.Redis(port=port, socket_timeout=1) as sentinel:
                address = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
            ports.add(int(address[1]) if address else None)
        return ports.pop() if len(ports) == 1 else None


def _serve(args: list[str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _wait_replicating(replica_port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with redis.Redis(port=replica_port, socket_timeout=1) as replica:
        while replica.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica never caught up with the primary")
            time.sleep(0.1)


@contextmanager
def running_sentinel_group(folder: Path) -> Iterator[SentinelGroup]:
    """Start the group (no persistence), wait until the replica follows the primary and every
    Sentinel knows both; stop every process on exit."""
    primary, replica = free_port(), free_port()
    sentinel_ports = [free_port() for _ in range(3)]
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    processes: dict[int, subprocess.Popen[bytes]] = {}
    with ExitStack() as stack:
        stack.callback(_stop_all, processes)
        processes[primary] = _serve(["--port", str(primary), *common], folder, "primary")
        processes[replica] = _serve(
            ["--port", str(replica), "--replicaof", "127.0.0.1", str(primary), *common],
            folder,
            "replica",
        )
        for port in sentinel_ports:
            config = folder / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            )
            processes[port] = _serve([str(config), "--sentinel"], folder, f"sentinel-{port}")
        for port in processes:
            _wait_listening(port)
        _wait_replicating(replica)
        group = SentinelGroup(primary, replica, sentinel_ports, processes)
        _wait_known(group)
        yield group


def _wait_known(group: SentinelGroup) -> None:
    """Until each Sentinel has found the replica (it learns of it from the primary)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for port in group.sentinel_ports:
        with redis.Redis(port=port, socket_timeout=1) as sentinel:
            while not sentinel.sentinel_slaves(MASTER_NAME):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Sentinel {port} never saw the replica")
                time.sleep(0.1)


def _stop_all(processes: dict[int, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
