"""What only the operations tests need: their virtual host and how Flower is started."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devstack.processes import ROOT

#: The virtual host the operations tests run on (``KLING_OPS_TEST_VHOST`` overrides it, so that
#: engineers sharing one RabbitMQ each keep to their own).
OPS_VHOST = os.environ.get("KLING_OPS_TEST_VHOST", "kling-ops-test")
#: The virtual host of the fleet tests (queue exporter, status, dead letters), apart from the
#: operations run's, whose worker lives for the whole session (``KLING_FLEET_TEST_VHOST``).
FLEET_VHOST = os.environ.get("KLING_FLEET_TEST_VHOST", f"{OPS_VHOST}-fleet")
#: Flower's basic-auth credentials in the tests.
FLOWER_USER, FLOWER_PASSWORD = "operator", "flower-test-password"


def flower_command(port: int, db: Path) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "worker", "flower",
        f"--conf={ROOT / 'config' / 'flowerconfig.py'}",
        f"--port={port}", "--address=127.0.0.1", f"--db={db}",
    ]  # fmt: skip
