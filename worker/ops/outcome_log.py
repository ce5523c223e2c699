"""The one log line (and metric) each job outcome gets."""

from __future__ import annotations

import logging

from contract.results import Result
from worker.ops import metrics

logger = logging.getLogger("worker.outcomes")


def log_outcome(result: Result, *, upstream_s: float | None, republished: bool = False) -> None:
    """Count the job's outcome and log its outcome line (a JSON object under LOG_FORMAT=json).

    ``upstream_s`` is the time spent in init-selection calls, every attempt together (``None``:
    no call was made). Nothing here can hold a secret: the source is named by kind, the account
    by its name.
    """
    error_type = result.error.type if result.error else None
    source = result.source
    source_kind = source.get("kind") if isinstance(source, dict) else getattr(source, "kind", None)
    latency_ms = round(upstream_s * 1000, 1) if upstream_s is not None else None
    billed_units = result.billing.units if result.billing else None
    metrics.count_job(result.status, error_type)
    logger.info(
        "Job %s %s (source=%s, error=%s, attempts=%d, upstream_ms=%s, account=%s, "
        "kling_request_id=%s).",
        result.job_id,
        result.status,
        source_kind,
        error_type,
        result.attempts,
        latency_ms,
        result.account,
        result.kling_request_id,
        extra={
            "event": "job_outcome",
            "job_id": result.job_id,
            "source_kind": source_kind,
            "status": result.status,
            "error_type": error_type,
            "attempts": result.attempts,
            "upstream_latency_ms": latency_ms,
            "account": result.account,
            "billed_units": billed_units,
            "kling_request_id": result.kling_request_id,
            "republished": republished,
        },
    )
