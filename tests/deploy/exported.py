"""Every metric name the fleet really exports: each worker process's registry
(worker/ops/metrics.py, the unacked-jobs gauge, the process collectors) and
``kling-queue-exporter``'s collector.

The names are the ones a query uses (``kling_jobs_total``, ``..._bucket``), derived from each
family's type, so a metric counts even before its first sample.
"""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import worker.app  # noqa: F401  (registers every worker metric, as a worker process does)
from contract.settings import Settings
from worker.ops.fleet_state import FleetStateReader, accounts_from_settings
from worker.ops.queue_metrics import FleetCollector
from worker.ops.queue_probe import probe_for

#: The sample names each family type exports.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def sample_names(families: list[Metric]) -> set[str]:
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def exporter_families() -> list[Metric]:
    """The queue exporter's families, described without asking any broker."""
    settings = Settings(
        _env_file=None,
        celery_broker_url="amqp://guest:guest@127.0.0.1:1//",
        redis_url="redis://127.0.0.1:1/0",
    )
    store = FleetStateReader.from_settings(settings, accounts_from_settings(settings))
    collector = FleetCollector(probe_for(settings), store, cache_s=5)
    return list(collector.describe())


def worker_metric_names() -> set[str]:
    return sample_names(list(REGISTRY.collect()))


def exported_metric_names() -> set[str]:
    """What Prometheus can query from the fleet's own exporters."""
    return worker_metric_names() | sample_names(exporter_families())
