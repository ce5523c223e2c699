"""The Celery application, configured from the one :class:`~producers.settings.Settings` object.

``celery -A worker worker`` finds :data:`app` here; tests and the demo build their own with
:func:`create_app`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from celery import Celery, states
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

import worker.tasks  # noqa: F401  (registers kling.init_selection on every app)
from producers.broker import declare_topology, job_queue, transport_options, warn_embedded_broker
from producers.names import JOB_QUEUE, TASK_NAME
from producers.settings import Settings
from worker import logs, metrics
from worker.runtime import Runtime

logger = logging.getLogger(__name__)

#: The pool ``celery -A worker worker`` uses with no options. Threads: the work is one blocking
#: HTTP call per job, and unlike gevent the pool can be chosen in configuration (README, "Pool").
DEFAULT_POOL = "threads"


_apps: weakref.WeakSet[WorkerApp] = weakref.WeakSet()


class WorkerApp(Celery):  # type: ignore[misc]
    """A Celery app that carries its settings and builds the per-process resources lazily."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("worker", set_as_current=False)
        self.settings = settings
        self._runtime: Runtime | None = None
        self._runtime_lock = threading.Lock()
        #: Set on warm shutdown: jobs waiting to retry are handed back to the broker.
        self.stopping = threading.Event()
        _apps.add(self)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            with self._runtime_lock:
                if self._runtime is None:
                    self._runtime = Runtime.build(self.settings, stopping=self.stopping)
        return self._runtime

    def close_runtime(self) -> None:
        with self._runtime_lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for this workload: JSON only, late acks, long I/O, task events on."""
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        # Keep reconnecting for as long as it takes: a broker restart must not need a person.
        "broker_connection_max_retries": None,
        "broker_pool_limit": settings.worker_concurrency + 16,
        # No AMQP heartbeats (TCP keepalive instead): with them Celery's event loop also reads
        # the task-events connection, racing pool threads that wait there for publish confirms,
        # and a worker under load stalls (README, "Performance"); gevent slows 40× (calibration).
        "broker_heartbeat": 0,
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
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
        "task_queues": [job_queue()],
        "task_default_queue": JOB_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {TASK_NAME: {"queue": JOB_QUEUE}},
        "worker_hijack_root_logger": False,
        # Messages that are not a job go to the dead-letter queue instead of being dropped.
        "worker_consumer": "worker.dead_letters:DeadLetteringConsumer",
        "enable_utc": True,
    }


def create_app(settings: Settings | None = None) -> WorkerApp:
    settings = settings or Settings()
    app = WorkerApp(settings)
    app.config_from_object(celery_config(settings))
    return app


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


worker_ready.connect(_on_worker_ready, weak=False)
worker_shutting_down.connect(_on_worker_shutting_down, weak=False)
worker_shutdown.connect(_on_worker_shutdown, weak=False)


# Operations (docs/operations.md): JSON logs, the metrics exporter, per-job upstream time.
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


def _on_task_prerun(sender: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) == TASK_NAME:
        metrics.start_job()


def _on_task_postrun(sender: Any = None, state: str | None = None, **_: Any) -> None:
    # The task raises (Reject) only when its result could not be published.
    if getattr(sender, "name", None) == TASK_NAME and state in (states.REJECTED, states.FAILURE):
        metrics.count_publish_failure()


after_setup_logger.connect(_on_logger_set_up, weak=False)
after_setup_task_logger.connect(_on_logger_set_up, weak=False)
worker_ready.connect(_on_worker_ready_metrics, weak=False)
worker_shutdown.connect(_on_worker_shutdown_metrics, weak=False)
task_prerun.connect(_on_task_prerun, weak=False)
task_postrun.connect(_on_task_postrun, weak=False)

app = create_app()
