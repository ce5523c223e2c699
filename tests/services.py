"""Where the test services live, and the rule for a service that is not there."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: A separate database for the fleet's shared state (idempotency, breaker, limits), flushed by
#: the tests that use it.
STATE_REDIS_URL = os.environ.get("TEST_STATE_REDIS_URL", "redis://127.0.0.1:6379/1")
IN_CI = os.environ.get("CI", "").lower() == "true"

#: Bucket the S3 fixture fills with every sample clip, under ``clips/<filename>``.
SAMPLES_BUCKET = "uploads"
#: The same clips, readable without a signature, for ``url`` jobs.
PUBLIC_BUCKET = "public"
#: The bearer key the simulator fixture accepts; distinctive, so a leak is easy to grep for.
API_KEY = "sk-test-9f2c1d-not-a-real-key"


def require_service(name: str, host: str, port: int) -> None:
    """Skip when ``name`` is not listening, unless under CI, where that is a failure."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI must run every service test", pytrace=False)
        pytest.skip(message)


def require_binary(name: str) -> None:
    """Skip when the program ``name`` is not installed, unless under CI (a failure there)."""
    if shutil.which(name) is None:
        message = f"{name} is not installed"
        if IN_CI:
            pytest.fail(f"{message}; CI must run every service test", pytrace=False)
        pytest.skip(message)
