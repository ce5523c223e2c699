"""A producer that is not ours: a stock Celery app that knows only the task's name, its queue and
the job's JSON (docs/contract.md) gets its job answered. Nothing of this project sends it."""

from __future__ import annotations

import uuid

from celery import Celery

from tests.integration.stack import Stack


def test_a_plain_celery_app_sending_the_task_by_name_gets_one_result(stack: Stack) -> None:
    stack.sim.add_video("v-foreign", "t-foreign", duration_ms=5000)
    job_id = f"foreign-{uuid.uuid4().hex[:8]}"
    job = {
        "job_id": job_id,
        "source": {"kind": "kling", "video_id": "v-foreign", "task_id": "t-foreign"},
        "metadata": {"sent_by": "a stock Celery app"},
    }
    foreign = Celery("someone-else", broker=stack.settings.broker_url, set_as_current=False)
    try:
        foreign.send_task(
            "kling.init_selection",
            kwargs={"job": job},
            task_id=job_id,
            queue="kling.init_selection",
        )
    finally:
        foreign.close()

    result = stack.result(job_id)

    assert result.status == "succeeded"
    assert result.metadata == {"sent_by": "a stock Celery app"}
