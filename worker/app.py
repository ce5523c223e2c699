"""The Celery application, configured from the one :class:`~contract.settings.Settings` object.

``celery -A worker worker`` finds :data:`app` here; tests and the demo build their own with
:func:`create_app`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from os import EX_CONFIG
from typing import Any

from celery import Celery, states
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

import worker.tasks  # noqa: F401  (registers kling.init_selection on every app)
from contract.names import JOB_QUEUE, TASK_NAME
from contract.settings import Settings
from contract.topology import (
    broker_transport,
    declare_topology,
    job_queue,
    lease_wait_queue,
    transport_options,
    warn_embedded_broker,
)
from worker.errors import ConfigurationError, JobEndedFailed
from worker.events import TaskEventBatching
from worker.ops import logs, metrics
from worker.ops import queue_metrics as _queue_metrics  # noqa: F401  (kling_worker_unacked_jobs)
from worker.runtime import Runtime

logger = logging.getLogger(__name__)

#: The pool ``celery -A worker worker`` uses with no options. Threads: the work is one blocking
#: HTTP call per job, and unlike gevent the pool can be chosen in configuration
#: (docs/guarantees.md, "Pool"). Celery's threads pool, but a job delayed by a crash starts
#: first (worker/pool.py).
DEFAULT_POOL = "worker.pool:TaskPool"


_apps: weakref.WeakSet[WorkerApp] = weakref.WeakSet()


class WorkerApp(Celery):  # type: ignore[misc]
    """A Celery app that carries its settings and the per-process resources.

    Nothing happens at construction: the settings (environment and ``.env``) are read when the
    configuration is first needed, and the runtime is built when the worker starts
    (:func:`_on_worker_init`), or on the first job of a worker started another way.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("worker", set_as_current=False)
        self._settings = settings
        self._runtime: Runtime | None = None
        self._runtime_lock = threading.Lock()
        #: Set on warm shutdown: jobs waiting to retry are handed back to the broker.
        self.stopping = threading.Event()
        self.add_defaults(lambda: celery_config(self.settings))
        self.steps["consumer"].add(TaskEventBatching)
        _apps.add(self)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings()
        return self._settings

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            with self._runtime_lock:
                if self._runtime is None:
                    self._runtime = Runtime.build(self.settings, stopping=self.stopping)
        return self._runtime

    def forget_runtime(self) -> None:
        """Drop an inherited runtime without closing it (a forked child must not share its
        parent's sockets); the child builds its own on its first job."""
        self._runtime = None

    def close_runtime(self) -> None:
        with self._runtime_lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None


#: Most broker connections a worker process publishes task messages on (see celery_config).
BROKER_PUBLISH_CONNECTIONS = 16


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for this workload: JSON only, late acks, long I/O, task events on."""
    return {
        "broker_url": settings.broker_url,
        "broker_transport": broker_transport(settings),
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        # Keep reconnecting for as long as it takes: a broker restart must not need a person.
        "broker_connection_max_retries": None,
        # Connections the tasks publish on (lease-wait copies): held for one confirmed publish
        # each, so a few serve thousands of greenlets, which wait their turn. One per greenlet
        # let a dead worker's 2,000 jobs, sent back to wait at once, exhaust RabbitMQ's files.
        "broker_pool_limit": BROKER_PUBLISH_CONNECTIONS,
        # No AMQP heartbeats (TCP keepalive instead): with them Celery's event loop also reads
        # the task-events connection, racing pool threads that wait there for publish confirms,
        # and a worker under load stalls (docs/history/2026-11-25-performance.md); gevent slows
        # 40× (docs/calibration.md, trap 1).
        "broker_heartbeat": 0,
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # One (disabled) backend for the process, not one per thread: under gevent each
        # greenlet is a thread, and building a backend per job cost 4 % of its CPU.
        "result_backend_thread_safe": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # After a reconnect, Celery lowers the prefetch count and restores it from the thread
        # that acks a task; with the threads pool that is a pool thread, which then reads the
        # consumer's socket alongside the event loop and the worker stalls (seen in
        # tests/chaos: a RabbitMQ restart, then unacked jobs forever). Keep the count fixed.
        "worker_enable_prefetch_count_reduction": False,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "worker_pool": DEFAULT_POOL,
        "worker_concurrency": settings.worker_concurrency,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # The lease-wait queue holds job copies waiting for another worker's lease (tasks.py).
        "task_queues": [job_queue(), lease_wait_queue()],
        "task_default_queue": JOB_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {TASK_NAME: {"queue": JOB_QUEUE}},
        "worker_hijack_root_logger": False,
        # Messages that are not a job go to the dead-letter queue instead of being dropped.
        "worker_consumer": "worker.dead_letters:DeadLetteringConsumer",
        "enable_utc": True,
    }


def create_app(settings: Settings | None = None) -> WorkerApp:
    """An app on ``settings`` (default: the environment's, read when first needed)."""
    return WorkerApp(settings)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if not isinstance(app, WorkerApp):
        return
    consumed = app.amqp.queues.consume_from
    if consumed is not None and JOB_QUEUE in consumed:
        # A worker told `-Q kling.init_selection` must also take back the copies it sends to
        # wait, or they would wait forever.
        app.amqp.queues.select_add(lease_wait_queue())
    try:
        app.runtime  # noqa: B018  (built now, so a bad setting stops the worker at start)
    except ConfigurationError as exc:
        logger.critical("The worker cannot start: %s", exc)
        # SystemExit passes through Celery's signal dispatch, which logs other errors and goes on.
        raise SystemExit(EX_CONFIG) from exc


def _on_worker_process_init(**_: Any) -> None:
    for app in list(_apps):
        app.forget_runtime()


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if not isinstance(app, WorkerApp):
        return
    if app.settings.uses_embedded_broker:
        warn_embedded_broker(app.settings)
    # The result and dead-letter queues exist before the first job ends, so a result published
    # before any consumer has bound a queue is kept, not dropped by the exchange.
    with app.connection_for_write() as connection:
        declare_topology(connection)


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if isinstance(app, WorkerApp):
        app.close_runtime()


def _on_worker_shutting_down(**_: Any) -> None:
    # The signal names only the host; a worker process has one app, so tell them all.
    for app in list(_apps):
        app.stopping.set()


worker_init.connect(_on_worker_init, weak=False)
worker_process_init.connect(_on_worker_process_init, weak=False)
worker_ready.connect(_on_worker_ready, weak=False)
worker_shutting_down.connect(_on_worker_shutting_down, weak=False)
worker_shutdown.connect(_on_worker_shutdown, weak=False)


# Operations (docs/operations.md): JSON logs and the metrics exporter.
def _on_logger_set_up(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        logs.install(logger, Settings())


def _on_worker_ready_metrics(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if isinstance(app, WorkerApp):
        metrics.start_exporter(app.settings.metrics_port)


def _on_worker_shutdown_metrics(sender: Any = None, **_: Any) -> None:
    if isinstance(getattr(sender, "app", None), WorkerApp):
        metrics.stop_exporter()


def _on_task_postrun(
    sender: Any = None, state: str | None = None, retval: Any = None, **_: Any
) -> None:
    # The task raises Reject when its result could not be published, and JobEndedFailed after a
    # failed job's result was published: only the first (or any other failure) published nothing.
    if getattr(sender, "name", None) != TASK_NAME:
        return
    if state == states.REJECTED or (
        state == states.FAILURE and not isinstance(retval, JobEndedFailed)
    ):
        metrics.count_publish_failure()


after_setup_logger.connect(_on_logger_set_up, weak=False)
after_setup_task_logger.connect(_on_logger_set_up, weak=False)
worker_ready.connect(_on_worker_ready_metrics, weak=False)
worker_shutdown.connect(_on_worker_shutdown_metrics, weak=False)
task_postrun.connect(_on_task_postrun, weak=False)

app = create_app()
