"""With no broker configured, the pipeline runs on the embedded (filesystem) broker."""

from __future__ import annotations

from pathlib import Path

from producers import KlingVideo
from simulator.testing import RunningSimulator
from tests.integration.stack import running_stack, stack_settings
from tests.services import API_KEY


def test_jobs_run_end_to_end_on_the_embedded_broker(
    sim: RunningSimulator, s3_endpoint: str, tmp_path: Path
) -> None:
    settings = stack_settings(
        None, sim, s3_endpoint, API_KEY, embedded_broker_dir=tmp_path / "broker"
    )
    assert settings.uses_embedded_broker
    sim.add_video("embedded-video", "embedded-task")

    with running_stack(settings, sim) as stack:
        job_id = stack.submit(KlingVideo(video_id="embedded-video", task_id="embedded-task"))
        result = stack.result(job_id)

    assert result.status == "succeeded", result.error
    assert (tmp_path / "broker" / "queues").is_dir()
    assert stack.sim.stats()["calls"] == 1
