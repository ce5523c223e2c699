"""Fixtures of the pre-flight tests: the corpus of awkward clips, made once per session under
its temporary folder, served over HTTP with Range support and from the S3 test server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.local_s3 import LocalS3, upload_files
from tests.simulator.clip_host import ClipHost, serving_clips
from tests.worker.preflight.corpus import build

#: The private bucket the corpus is uploaded to (read through presigned URLs only).
CORPUS_BUCKET = "preflight"


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.getbasetemp() / "preflight-corpus"
    build(directory)
    return directory


@pytest.fixture(scope="session")
def corpus(corpus_dir: Path) -> dict[str, bytes]:
    """Every corpus clip's bytes by file name."""
    return build(corpus_dir)


@pytest.fixture(scope="session")
def corpus_host(corpus: dict[str, bytes]) -> Iterator[ClipHost]:
    """The corpus over HTTP on loopback, with Range support (and the clip host's other routes)."""
    with serving_clips(corpus) as host:
        yield host


@pytest.fixture(scope="session")
def corpus_bucket(local_s3: LocalS3, corpus_dir: Path) -> str:
    """The corpus in the S3 test server, as ``s3://preflight/<file name>``."""
    files = [(path.name, path) for path in sorted(corpus_dir.iterdir())]
    upload_files(local_s3, CORPUS_BUCKET, files)
    return CORPUS_BUCKET
