"""Metrics an autoscaler and an on-call person read: the job queue, dead letters, fleet calls.

``kling-queue-exporter`` serves them (one per fleet; port 9809). It asks the broker and the shared
store at scrape time, at most once per ``--cache-seconds``, with work that does not grow with the
queue (worker/ops/queue_probe.py, worker/ops/fleet_state.py). A process of its own, not a
collector in every worker, because these are facts about the fleet, not about one process: one
series each instead of one per replica, still there when the workers are scaled to zero or all
down (which is when "no worker consuming" must fire), and one broker probe per scrape instead of
one per replica.

Each worker process adds one gauge to its own exporter, :data:`WORKER_UNACKED`: the job messages
it has received and not yet acknowledged. Their sum over the fleet is the job queue's
unacknowledged count, which RabbitMQ tells only through its management plugin.

Names (``docs/operations.md`` has the queries):

- ``kling_queue_ready_messages{queue}``, ``kling_queue_consumers{queue}`` (RabbitMQ only),
  ``kling_queue_oldest_message_age_seconds{queue}`` (0 when empty), ``kling_dead_letters_waiting``;
- ``kling_fleet_calls_in_flight{account}``, ``kling_fleet_call_limit{account}``,
  ``kling_fleet_call_target{account}``, ``kling_account_paused{account}`` (with ``REDIS_URL``);
- ``kling_broker_probe_success``, ``kling_shared_store_probe_success``: 1 when the last probe
  answered; the other series are left out while their source does not answer;
- ``kling_worker_unacked_jobs``, from each worker's own exporter.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from celery.worker import state as celery_state
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from contract.names import DEAD_LETTER_QUEUE, JOB_QUEUE
from contract.settings import Settings
from worker.ops.fleet_state import AccountState, FleetStateReader, accounts_from_settings
from worker.ops.queue_probe import BrokerProbe, ProbeFailed, QueueSnapshot, probe_for

logger = logging.getLogger(__name__)

#: Port of ``kling-queue-exporter`` (the workers' own exporters use METRICS_PORT, 9808).
DEFAULT_PORT = 9809
#: How long one probe's answer serves scrapes: Prometheus scrapes every 15 s, KEDA polls every 30 s.
DEFAULT_CACHE_S = 5.0

WORKER_UNACKED = Gauge(
    "kling_worker_unacked_jobs",
    "Job messages this worker process has received and not acknowledged (running or reserved); "
    "the sum over the fleet is the job queue's unacknowledged count.",
)
# Late acks: a request leaves Celery's reserved set when its run ends, as its message is acked.
WORKER_UNACKED.set_function(lambda: len(celery_state.reserved_requests))


class FleetCollector(Collector):
    """The exporter's metrics, from one probe of the broker and one of the store per cache
    period; concurrent scrapes share it."""

    def __init__(
        self, probe: BrokerProbe, store: FleetStateReader | None, *, cache_s: float
    ) -> None:
        self._probe = probe
        self._store = store
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._queue: QueueSnapshot | None = None
        self._accounts: list[AccountState] | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return _families(None, None, store_configured=self._store is not None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_s:
                self._queue, self._accounts = self._read()
                self._read_at = time.monotonic()
            queue, accounts = self._queue, self._accounts
        return _families(queue, accounts, store_configured=self._store is not None)

    def _read(self) -> tuple[QueueSnapshot | None, list[AccountState] | None]:
        queue: QueueSnapshot | None = None
        accounts: list[AccountState] | None = None
        try:
            queue = self._probe.snapshot()
        except ProbeFailed as exc:
            logger.warning("The broker did not answer the queue probe: %s.", exc)
        if self._store is not None:
            try:
                accounts = self._store.read()
            except ProbeFailed as exc:
                logger.warning("The shared store did not answer: %s.", exc)
        return queue, accounts

    def close(self) -> None:
        self._probe.close()
        if self._store is not None:
            self._store.close()


def _families(
    queue: QueueSnapshot | None, accounts: list[AccountState] | None, *, store_configured: bool
) -> list[GaugeMetricFamily]:
    """Every family the exporter serves, with samples from what answered."""

    def family(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=list(labels))

    ready = family("kling_queue_ready_messages", "Jobs waiting in the queue.", ["queue"])
    consumers = family("kling_queue_consumers", "Consumers of the job queue.", ["queue"])
    age = family(
        "kling_queue_oldest_message_age_seconds",
        "Age of the next job to be taken, from its submitted_at (0: the queue is empty).",
        ["queue"],
    )
    dead = family("kling_dead_letters_waiting", "Messages on the dead-letter queue.", ["queue"])
    broker_ok = family("kling_broker_probe_success", "1 if the broker answered the last probe.")
    broker_ok.add_metric([], 0.0 if queue is None else 1.0)
    if queue is not None:
        ready.add_metric([JOB_QUEUE], queue.ready)
        if queue.consumers is not None:
            consumers.add_metric([JOB_QUEUE], queue.consumers)
        if queue.oldest_age_s is not None:
            age.add_metric([JOB_QUEUE], queue.oldest_age_s)
        dead.add_metric([DEAD_LETTER_QUEUE], queue.dead_letters)
    families = [ready, consumers, age, dead, broker_ok]

    in_flight = family(
        "kling_fleet_calls_in_flight", "Upstream calls in flight across the fleet.", ["account"]
    )
    limit = family(
        "kling_fleet_call_limit", "Configured cap on calls in flight across the fleet.", ["account"]
    )
    target = family(
        "kling_fleet_call_target",
        "In-flight target after backing off on busy answers (the limit when not backed off).",
        ["account"],
    )
    paused = family(
        "kling_account_paused",
        "1 while calls on the account are paused after an auth or account failure.",
        ["account"],
    )
    store_ok = family(
        "kling_shared_store_probe_success", "1 if the shared store (REDIS_URL) answered."
    )
    if store_configured:
        store_ok.add_metric([], 0.0 if accounts is None else 1.0)
    for account in accounts or []:
        in_flight.add_metric([account.account], account.calls_in_flight)
        limit.add_metric([account.account], account.call_limit)
        target.add_metric([account.account], account.call_target)
        paused.add_metric([account.account], 1.0 if account.paused else 0.0)
    return [*families, in_flight, limit, target, paused, store_ok]


def build_collector(settings: Settings, *, cache_s: float = DEFAULT_CACHE_S) -> FleetCollector:
    store = (
        FleetStateReader.from_settings(settings, accounts_from_settings(settings))
        if settings.has_shared_store
        else None
    )
    return FleetCollector(probe_for(settings), store, cache_s=cache_s)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-queue-exporter",
        description="Serve the job queue's and the fleet's metrics for Prometheus and KEDA.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument("--addr", default="0.0.0.0", help="default %(default)s")
    parser.add_argument(
        "--cache-seconds",
        type=float,
        default=DEFAULT_CACHE_S,
        help="serve one probe's answer this long (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        collector = build_collector(Settings(), cache_s=args.cache_seconds)
    except ValueError as exc:
        raise SystemExit(f"kling-queue-exporter: {exc}") from exc
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(args.port, addr=args.addr, registry=registry)
    logger.info("Queue metrics on http://%s:%d/metrics.", args.addr, args.port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    collector.close()


if __name__ == "__main__":
    main()
