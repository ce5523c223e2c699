"""The log formatters and the metrics helpers, without a broker."""

from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from celery import states
from pydantic import SecretStr

from contract.names import TASK_NAME
from contract.settings import Settings
from worker.app import _on_task_postrun
from worker.errors import UpstreamBusy, VideoRejected
from worker.ops import logs, metrics

PRESIGNED = (
    "http://minio:9000/uploads/a.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=0123456789abcdef"
)


def settings(**values: Any) -> Settings:
    return Settings(
        _env_file=None,
        kling_api_key=SecretStr("sk-unit-test-key-123"),
        celery_broker_url="amqp://fleet:broker-password@rabbitmq:5672//",
        **values,
    )


def render(formatter: logging.Formatter, message: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.Logger("unit")
    logger.addHandler(handler)
    logger.warning(message, *args, extra=extra)
    return stream.getvalue().rstrip("\n")


def test_a_json_line_has_the_record_and_its_extras() -> None:
    line = render(logs.make_formatter(settings()), "Job %s done.", "j-1", job_id="j-1", attempts=2)

    entry = json.loads(line)
    assert entry["message"] == "Job j-1 done."
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "unit"
    assert entry["job_id"] == "j-1"
    assert entry["attempts"] == 2
    assert entry["ts"].endswith("+00:00")


def test_secrets_and_signatures_never_reach_a_line_in_either_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-for-the-unit-test")
    for log_format in ("json", "text"):
        formatter = logs.make_formatter(settings(log_format=log_format))

        line = render(
            formatter,
            "Calling with key %s, broker %s, secret %s, url %s, header Bearer %s.",
            "sk-unit-test-key-123",
            "amqp://fleet:broker-password@rabbitmq",
            "aws-secret-for-the-unit-test",
            PRESIGNED,
            "eyJhbGciOi.payload.sig",
            data={"kwargs": PRESIGNED},
        )

        for secret in (
            "sk-unit-test-key-123",
            "broker-password",
            "aws-secret-for-the-unit-test",
            "0123456789abcdef",
            "AKIAEXAMPLE",
            "eyJhbGciOi",
        ):
            assert secret not in line, (log_format, secret)
        assert "X-Amz-Signature=REDACTED" in line
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in line  # harmless parameters stay


def test_text_format_is_a_plain_line() -> None:
    line = render(logs.make_formatter(settings(log_format="text")), "Hello %s.", "operator")

    assert line.endswith("WARNING unit: Hello operator.")
    assert not line.startswith("{")


def test_install_leaves_handlers_it_did_not_make_alone() -> None:
    logger = logging.Logger("unit-install")
    celery_made = logging.StreamHandler(io.StringIO())
    foreign = logging.FileHandler("/dev/null")
    logger.addHandler(celery_made)
    logger.addHandler(foreign)
    try:
        logs.install(logger, settings())

        assert isinstance(celery_made.formatter, logs.JsonFormatter)
        assert not isinstance(foreign.formatter, logs.JsonFormatter)
    finally:
        foreign.close()


def test_an_upstream_call_is_timed_and_labelled_with_its_outcome() -> None:
    count = metrics.UPSTREAM_LATENCY.labels(outcome="video_rejected")
    before = count._sum.get()
    in_flight: list[float] = []

    def rejected_call() -> None:
        with metrics.upstream_call():
            in_flight.append(metrics.UPSTREAM_IN_FLIGHT._value.get())
            raise VideoRejected("too short")

    with pytest.raises(VideoRejected):
        rejected_call()
    with metrics.upstream_call():
        pass

    assert in_flight[0] >= 1
    assert count._sum.get() > before
    assert metrics.UPSTREAM_IN_FLIGHT._value.get() == 0


def test_retries_are_counted_by_reason() -> None:
    busy = metrics.RETRIES.labels(reason="upstream_busy")
    before = busy._value.get()

    metrics.count_retry(UpstreamBusy("1303"))

    assert busy._value.get() == before + 1


def test_a_task_run_that_could_not_publish_counts_as_a_publish_failure() -> None:
    before = metrics.PUBLISH_FAILURES._value.get()
    task = SimpleNamespace(name=TASK_NAME)

    _on_task_postrun(sender=task, state=states.REJECTED)
    _on_task_postrun(sender=task, state=states.SUCCESS)
    _on_task_postrun(sender=SimpleNamespace(name="other"), state=states.REJECTED)

    assert metrics.PUBLISH_FAILURES._value.get() == before + 1


def test_metrics_port_zero_turns_the_exporter_off() -> None:
    assert metrics.start_exporter(0) is None
