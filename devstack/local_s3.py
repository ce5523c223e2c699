"""A local S3-protocol server (moto's, over real HTTP) for the demo and the tests.

It needs the ``demo`` extra. Clients reach it with ``S3_ENDPOINT_URL`` and any credentials:
:attr:`LocalS3.env` holds the settings a process needs to use it. Nothing here writes
``os.environ``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Credentials the local server accepts (it checks none); never real ones.
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local-demo-access-key",
    "AWS_SECRET_ACCESS_KEY": "local-demo-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class LocalS3:
    """A running local S3 server."""

    endpoint_url: str
    #: What a worker (or any boto3 client) needs in its environment to use this server.
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> S3Client:
        """A boto3 client on this server, with its fake credentials."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=LOCAL_AWS_ENV["AWS_DEFAULT_REGION"],
        )


@contextmanager
def running_s3_server() -> Iterator[LocalS3]:
    """Serve S3 on 127.0.0.1 (a free port) in a thread."""
    from moto.server import ThreadedMotoServer

    # The server logs every request at INFO through werkzeug: too loud for a demo.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield LocalS3(endpoint, {**LOCAL_AWS_ENV, "S3_ENDPOINT_URL": endpoint})
    finally:
        server.stop()


def upload_files(
    s3: LocalS3, bucket: str, files: Iterable[tuple[str, Path]], *, public: bool = False
) -> None:
    """Create ``bucket`` (if new) and upload each ``(key, path)``; ``public`` objects can be
    fetched without a signature (like a CDN), private ones only through a presigned URL."""
    client = s3.client()
    existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    for key, path in files:
        extra = {"ACL": "public-read"} if public else {}
        client.upload_file(str(path), bucket, key, ExtraArgs=extra)
