"""Celery workers that open Kling multi-elements editing sessions (``celery -A worker worker``).

``app`` and ``create_app`` are loaded on first use, not on import, so that ``kling-worker``
(:mod:`worker.command`) can make the standard library cooperative before Celery is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.app import WorkerApp, create_app

    app: WorkerApp

__all__ = ["app", "create_app"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    module = importlib.import_module("worker.app")

    # Importing the submodule bound ``worker.app`` to it: bind the Celery app instead, as
    # ``celery -A worker`` and ``from worker import app`` expect.
    globals().update(app=module.app, create_app=module.create_app)
    return globals()[name]
