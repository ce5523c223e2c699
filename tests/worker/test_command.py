"""``kling-worker`` patches the standard library before Celery, kombu or redis-py is imported."""

from __future__ import annotations

import subprocess
import sys


def printed_by(code: str) -> str:
    """What ``code`` prints in a fresh interpreter (nothing imported yet)."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip()


def test_importing_the_command_imports_no_networking_library_before_gevent_patches() -> None:
    imported = printed_by(
        "import sys, worker.command; "
        "print(sorted(m for m in ('celery', 'kombu', 'redis', 'requests') if m in sys.modules))"
    )
    assert imported == "[]"


def test_celery_still_finds_the_app_in_the_package() -> None:
    # As ``celery -A worker`` looks it up: the package's attribute, in a fresh process.
    found = printed_by(
        "import worker; app = worker.app; "
        "from worker.app import WorkerApp; print(isinstance(app, WorkerApp))"
    )
    assert found == "True"
