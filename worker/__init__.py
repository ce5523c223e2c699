"""Celery workers that open Kling multi-elements editing sessions (``celery -A worker worker``)."""

from worker.app import app, create_app

__all__ = ["app", "create_app"]
