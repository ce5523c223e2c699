"""Prometheus metrics of one worker process, served over HTTP on ``METRICS_PORT``.

The metrics live in the process's default registry, so the exporter also serves the process
collectors (CPU, memory, open files). One exporter per worker process: that is one per node
with the threads or gevent pool; a prefork pool would need prometheus-client's multiprocess
mode, which this module does not set up.

Names (each counter is also exported with ``_total``; docs/operations.md has example queries):

- ``kling_jobs_total{status, error_type}``: terminal results, ``error_type`` empty on success.
- ``kling_upstream_request_duration_seconds{outcome}``: one init-selection HTTP call, by what it
  came to (``ok``, ``upstream_busy``, ``upstream_down`` or a job error type).
- ``kling_upstream_in_flight``: init-selection calls waiting for their answer right now.
- ``kling_job_retries_total{reason}``: attempts retried after a retryable failure.
- ``kling_limiter_wait_seconds``: time a call waited for the fleet-wide limiter.
- ``kling_result_publish_failures_total``: task runs that ended without publishing a result.
- ``kling_preflight_clips_total{outcome}``: clips probed before the call: ``passed``,
  ``rejected``, ``deferred`` (left to the API), ``source_not_found``, ``host_down``.
- ``kling_preflight_rejected_total{rule}``: clips failed before any call, by the clip rule they
  break: each is an init-selection call (and its answer's billing) not made.
- ``kling_preflight_bytes_read_total``, ``kling_preflight_requests_total``,
  ``kling_preflight_duration_seconds``: what probing cost (S3 bills GETs by the thousand).
- ``kling_account_calls_total{account, outcome}``: init-selection calls per account, by outcome.
- ``kling_account_in_flight{account}``: this process's calls in flight on each account.
- ``kling_account_paused{account}``: 1 while calls on the account are paused (its breaker).
- ``kling_account_billed_units_total{account}``: units the answers said they billed.

Every label value known in advance is exported from the start (at 0), so that ``rate()`` and
``increase()`` see the first event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, get_args

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from contract.clip_rules import RULE_NAMES
from contract.results import ErrorType
from worker.errors import JobFailure, UpstreamBusy, UpstreamDown

logger = logging.getLogger(__name__)

#: Upstream latency buckets, in seconds: a healthy call takes 0.1-2 s, the timeout is 30 s.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
#: Limiter wait buckets, in seconds: from "never waited" to "the fleet is far over its budget".
LIMITER_BUCKETS_S = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

JOBS = Counter(
    "kling_jobs",
    "Jobs that reached their terminal result, by status and error type.",
    ["status", "error_type"],
)
UPSTREAM_LATENCY = Histogram(
    "kling_upstream_request_duration_seconds",
    "Duration of one init-selection HTTP call, by outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS_S,
)
UPSTREAM_IN_FLIGHT = Gauge(
    "kling_upstream_in_flight", "init-selection calls in flight in this worker process."
)
RETRIES = Counter(
    "kling_job_retries",
    "Attempts retried after a retryable failure, by reason (upstream_busy, upstream_down).",
    ["reason"],
)
LIMITER_WAIT = Histogram(
    "kling_limiter_wait_seconds",
    "Time an init-selection call waited for the fleet-wide concurrency or rate limiter.",
    buckets=LIMITER_BUCKETS_S,
)
PUBLISH_FAILURES = Counter(
    "kling_result_publish_failures",
    "Task runs that ended without publishing a result (the job message goes back to the broker).",
)
PREFLIGHT_OUTCOMES = ("passed", "rejected", "deferred", "source_not_found", "host_down")
PREFLIGHT_CLIPS = Counter(
    "kling_preflight_clips", "Clips probed before the call, by outcome.", ["outcome"]
)
PREFLIGHT_REJECTED = Counter(
    "kling_preflight_rejected",
    "Clips failed before any call, by the clip rule they break (calls not made).",
    ["rule"],
)
PREFLIGHT_BYTES = Counter("kling_preflight_bytes_read", "Bytes of clips read by the pre-flight.")
PREFLIGHT_REQUESTS = Counter("kling_preflight_requests", "Ranged GETs made by the pre-flight.")
PREFLIGHT_DURATION = Histogram(
    "kling_preflight_duration_seconds",
    "Time one clip's pre-flight took (reads and probe).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

ACCOUNT_CALLS = Counter(
    "kling_account_calls",
    "init-selection calls by account and outcome (as kling_upstream_request_duration_seconds).",
    ["account", "outcome"],
)
ACCOUNT_IN_FLIGHT = Gauge(
    "kling_account_in_flight",
    "init-selection calls in flight on each account in this worker process.",
    ["account"],
)
ACCOUNT_PAUSED = Gauge(
    "kling_account_paused",
    "1 while calls on the account are paused after an auth or account failure, else 0.",
    ["account"],
)
ACCOUNT_BILLED_UNITS = Counter(
    "kling_account_billed_units",
    "Units the API's answers said they billed (data.final_unit_deduction), by account.",
    ["account"],
)

for _error_type in get_args(ErrorType):
    JOBS.labels(status="failed", error_type=_error_type)
JOBS.labels(status="succeeded", error_type="")
for _reason in ("upstream_busy", "upstream_down"):
    RETRIES.labels(reason=_reason)
for _outcome in PREFLIGHT_OUTCOMES:
    PREFLIGHT_CLIPS.labels(outcome=_outcome)
for _rule in RULE_NAMES:
    PREFLIGHT_REJECTED.labels(rule=_rule)

_exporter_lock = threading.Lock()
_exporter: tuple[Any, threading.Thread] | None = None


def call_outcome(exc: BaseException | None) -> str:
    """The ``outcome`` label of an upstream call that raised ``exc`` (``None``: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, JobFailure):
        return exc.error_type
    if isinstance(exc, UpstreamBusy):
        return "upstream_busy"
    if isinstance(exc, UpstreamDown):
        return "upstream_down"
    return "error"


@contextmanager
def upstream_call() -> Iterator[None]:
    """Time one init-selection call: the in-flight gauge and the latency by outcome.

    The body should include reading the answer, so that the outcome is what the answer meant.
    """
    UPSTREAM_IN_FLIGHT.inc()
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        elapsed_s = time.perf_counter() - started
        UPSTREAM_IN_FLIGHT.dec()
        UPSTREAM_LATENCY.labels(outcome=call_outcome(failure)).observe(elapsed_s)


def watch_account(account: str, paused: Callable[[], bool]) -> None:
    """Export ``account``'s series from the start; ``paused`` is asked at each scrape."""
    ACCOUNT_PAUSED.labels(account=account).set_function(lambda: float(paused()))
    ACCOUNT_IN_FLIGHT.labels(account=account)
    ACCOUNT_BILLED_UNITS.labels(account=account)
    for outcome in ("ok", "upstream_busy", "upstream_down", *get_args(ErrorType)):
        ACCOUNT_CALLS.labels(account=account, outcome=outcome)


@contextmanager
def account_call(account: str) -> Iterator[None]:
    """Count one init-selection call on ``account``, in flight while the body runs."""
    in_flight = ACCOUNT_IN_FLIGHT.labels(account=account)
    in_flight.inc()
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        in_flight.dec()
        ACCOUNT_CALLS.labels(account=account, outcome=call_outcome(failure)).inc()


def count_billed_units(account: str, units: float | None) -> None:
    """An answer on ``account`` said it billed ``units`` (a counter only grows: refunds,
    if the API ever sent negative figures, are left out)."""
    if units is not None and units > 0:
        ACCOUNT_BILLED_UNITS.labels(account=account).inc(units)


def count_job(status: str, error_type: str | None) -> None:
    JOBS.labels(status=status, error_type=error_type or "").inc()


def count_retry(exc: BaseException) -> None:
    RETRIES.labels(reason=call_outcome(exc)).inc()


def observe_limiter_wait(seconds: float) -> None:
    """For the fleet-wide limiter: how long a call waited before it could go."""
    LIMITER_WAIT.observe(seconds)


def count_publish_failure() -> None:
    """A task run ended without publishing its result (its log line says why)."""
    PUBLISH_FAILURES.inc()


def count_preflight(
    outcome: str, bytes_read: int, requests: int, elapsed_s: float, *, rule: str | None = None
) -> None:
    """One clip's pre-flight: its outcome (and broken rule), what it read, its time."""
    PREFLIGHT_CLIPS.labels(outcome=outcome).inc()
    if rule is not None:
        PREFLIGHT_REJECTED.labels(rule=rule).inc()
    PREFLIGHT_BYTES.inc(bytes_read)
    PREFLIGHT_REQUESTS.inc(requests)
    PREFLIGHT_DURATION.observe(elapsed_s)


def start_exporter(port: int, addr: str = "0.0.0.0") -> int | None:
    """Serve ``/metrics`` on ``port`` in a daemon thread, once per process; returns the port.

    ``0`` turns the exporter off. A port already taken is logged, not raised: metrics must never
    stop a worker from working.
    """
    global _exporter
    if port == 0:
        return None
    with _exporter_lock:
        if _exporter is not None:
            return int(_exporter[0].server_port)
        try:
            _exporter = start_http_server(port, addr=addr)
        except OSError as exc:
            logger.warning("Metrics exporter not started on port %d: %s.", port, exc)
            return None
        logger.info("Prometheus metrics on http://%s:%d/metrics.", addr, port)
        return port


def stop_exporter() -> None:
    global _exporter
    with _exporter_lock:
        if _exporter is not None:
            server, thread = _exporter
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            _exporter = None
