"""A local S3-protocol server (moto's, over real HTTP) for the demo and the tests.

It needs the ``demo`` extra. Clients reach it with ``S3_ENDPOINT_URL`` and any credentials; the
fake credentials below are set only where none are configured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

#: Credentials the local server accepts (it checks none); never real ones.
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local-demo-access-key",
    "AWS_SECRET_ACCESS_KEY": "local-demo-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def running_s3_server() -> Iterator[str]:
    """Serve S3 on 127.0.0.1 (a free port) in a thread; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    for name, value in LOCAL_AWS_ENV.items():
        os.environ.setdefault(name, value)
    # The server logs every request at INFO through werkzeug: too loud for a demo.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def upload_files(
    endpoint_url: str, bucket: str, files: Iterable[tuple[str, Path]], *, public: bool = False
) -> None:
    """Create ``bucket`` (if new) and upload each ``(key, path)``; ``public`` objects can be
    fetched without a signature (like a CDN), private ones only through a presigned URL."""
    s3 = boto3.client("s3", endpoint_url=endpoint_url)
    existing = {entry["Name"] for entry in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    for key, path in files:
        extra = {"ACL": "public-read"} if public else {}
        s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
