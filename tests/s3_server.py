"""A real S3-compatible server on loopback (moto's server, in a thread) for object-storage
tests, and the client settings pointing at it.

The server speaks S3 over HTTP on 127.0.0.1 and a free port; the code under test reaches
it only through the environment a pod would get (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``).
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs
import pytest

REGION = "us-east-1"
# Every variable that decides where and as whom an S3 client connects; tests clear the
# ones they do not set, so the machine's own AWS setup never leaks in.
AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_s3() -> Iterator[str]:
    """Run moto's server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def moto_api(endpoint: str, action: str, body: str = "") -> None:
    """Call moto's control API: ``reset`` (forget every bucket), ``reset-auth`` (check
    signatures and IAM policies after ``body`` more requests; ``inf``: never)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/{action}",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form body would hide it from moto
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def point_env_at(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, key: str = "testing", secret: str = "testing"
) -> None:
    """The environment a pipeline pod gets from its ConfigMap and Secret, aimed at ``endpoint``."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    missing = Path("/nonexistent/aws")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)


def upload(
    endpoint: str, local: Path, uri: str, key: str = "testing", secret: str = "testing"
) -> None:
    """Copy a local folder to ``s3://bucket/prefix`` (creating the bucket) over S3."""
    host = endpoint.split("://", 1)[1]
    fs = pafs.S3FileSystem(
        endpoint_override=host,
        scheme="http",
        region=REGION,
        access_key=key,
        secret_key=secret,
        allow_bucket_creation=True,
    )
    path = uri.removeprefix("s3://")
    fs.create_dir(path.split("/", 1)[0])
    pafs.copy_files(
        str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
