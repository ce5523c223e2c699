"""Client library for upstream services: enqueue init-selection jobs, consume their results.

>>> from producers import Producer, S3Object
>>> with Producer.from_env() as producer:                       # doctest: +SKIP
...     job_id = producer.submit(S3Object(bucket="uploads", key="clips/a.mp4"))
"""

from contract.jobs import Job, KlingVideo, S3Object, VideoUrl, make_job
from contract.results import Result, ResultError, VideoFacts
from contract.settings import Settings
from producers.consume import iter_results
from producers.errors import ContractError, InvalidJobError, ProducerError, PublishNotConfirmed
from producers.producer import Producer

__all__ = [
    "ContractError",
    "InvalidJobError",
    "Job",
    "KlingVideo",
    "Producer",
    "ProducerError",
    "PublishNotConfirmed",
    "Result",
    "ResultError",
    "S3Object",
    "Settings",
    "VideoFacts",
    "VideoUrl",
    "iter_results",
    "make_job",
]
