"""Flower's configuration for the fleet: ``celery -A worker flower --conf=config/flowerconfig.py``.

Tornado reads this file as Python; every name that is a Flower option sets it. The command line
overrides it, and it overrides ``FLOWER_*`` environment variables, so the basic-auth credentials
(``FLOWER_BASIC_AUTH=user:password``, from the env file) are deliberately not set here.
"""

from worker.ops.logs import SecretScrubber

_scrub = SecretScrubber()

# Keep the task history across restarts (docker-compose mounts a volume on /data).
persistent = True
db = "/data/flower.db"
# Write the history every minute too, not only at shutdown (milliseconds).
state_save_interval = 60_000
# Tasks kept in memory and on disk; the oldest go first.
max_tasks = 100_000
# Forget workers that have been offline for an hour (scaled-down replicas).
purge_offline_workers = 3600
# The tasks page shows the job in its arguments (producers set a redacted ``kwargsrepr``).
tasks_columns = "name,uuid,state,runtime,retries,worker,received,kwargs"
# The worker runs many threads: a broadcast inspect may take a moment under load (ms).
inspect_timeout = 5_000.0


def format_task(task):
    """What the UI shows of a task: any signed URL in its arguments without its signature.

    Producers of this project already send redacted arguments; this covers foreign ones.
    """
    task.args = _scrub(task.args) if isinstance(task.args, str) else task.args
    task.kwargs = _scrub(task.kwargs) if isinstance(task.kwargs, str) else task.kwargs
    return task
