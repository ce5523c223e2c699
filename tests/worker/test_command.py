"""``kling-worker`` patches the standard library before Celery, kombu or redis-py is imported."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_command_imports_no_networking_library_before_gevent_patches() -> None:
    probe = (
        "import sys, worker.command; "
        "print(sorted(m for m in ('celery', 'kombu', 'redis', 'requests') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_celery_still_finds_the_app_in_the_package() -> None:
    # As ``celery -A worker`` looks it up: the package's attribute, in a fresh process.
    probe = (
        "import worker; app = worker.app; "
        "from worker.app import WorkerApp; print(isinstance(app, WorkerApp))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "True"
