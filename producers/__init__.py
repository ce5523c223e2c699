"""Client library for upstream services: enqueue init-selection jobs, consume their results.

>>> from producers import Producer, S3Object
>>> with Producer.from_env() as producer:                       # doctest: +SKIP
...     job_id = producer.submit(S3Object(bucket="uploads", key="clips/a.mp4"))
"""

from producers.consume import iter_results
from producers.jobs import InvalidJobError, Job, KlingVideo, S3Object, VideoUrl, make_job
from producers.producer import Producer
from producers.results import Result, ResultError, VideoFacts
from producers.settings import Settings

__all__ = [
    "InvalidJobError",
    "Job",
    "KlingVideo",
    "Producer",
    "Result",
    "ResultError",
    "S3Object",
    "Settings",
    "VideoFacts",
    "VideoUrl",
    "iter_results",
    "make_job",
]
