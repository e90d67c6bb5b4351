"""Where a dataset lives: a local directory or object storage (``s3://bucket/prefix``).

Both go through one pyarrow filesystem interface, so the contract reader and the
validator have a single code path and their errors name a place the user can paste: the
path as given, or the ``s3://`` URI. S3 is pyarrow's own client (no boto3 or fsspec at
run time). Endpoint, region and credentials come from the environment variables boto3,
the AWS CLI and MLflow read; the pipeline's pods get them from the ConfigMap and Secret
(``pipeline.config_map_keys``: ``AWS_ENDPOINT_URL``; ``pipeline.secret_keys``:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from caprank.errors import DataError

S3_SCHEME = "s3://"
# First set wins: boto3's service-specific and global overrides, then MLflow's.
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
DENIED = ("ACCESS_DENIED", "HTTP status 403", "InvalidAccessKeyId", "SignatureDoesNotMatch")


def is_object_uri(uri: object) -> bool:
    """True for an ``s3://`` URI (a ``Path`` never is: it would have lost the ``//``)."""
    return isinstance(uri, str) and uri.startswith(S3_SCHEME)


def _first_env(names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def s3_settings() -> str:
    """Which endpoint, region and credentials an S3 read uses, for error messages."""
    endpoint = _first_env(ENDPOINT_VARS)
    region = _first_env(REGION_VARS)
    key_vars = CREDENTIAL_VARS[:2]
    where = f"{endpoint[1]} (from {endpoint[0]})" if endpoint else "AWS's own"
    if not endpoint:
        where += f" (none of {', '.join(ENDPOINT_VARS)} is set)"
    zone = f"{region[1]} (from {region[0]})" if region else "the bucket's own"
    if all(os.environ.get(name) for name in key_vars):
        keys = " and ".join(key_vars)
    else:
        keys = f"the AWS profile or instance role ({' and '.join(key_vars)} not both set)"
    return f"endpoint {where}, region {zone}, credentials from {keys}"


def s3_filesystem(uri: str) -> pafs.S3FileSystem:
    """pyarrow's S3 client for ``uri``, configured from the environment as boto3 users expect.

    An endpoint override (MinIO, a test server) takes its scheme from the URL and
    addresses buckets by path; without one the bucket's region is looked up when no
    ``AWS_REGION``/``AWS_DEFAULT_REGION`` is set. Credentials: the AWS SDK's default
    chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, then
    the profile, web identity, instance role).
    """
    options: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
    endpoint = _first_env(ENDPOINT_VARS)
    if endpoint:
        url = urlsplit(endpoint[1] if "://" in endpoint[1] else f"https://{endpoint[1]}")
        options["endpoint_override"] = url.netloc + url.path.rstrip("/")
        options["scheme"] = url.scheme
    region = _first_env(REGION_VARS)
    if region:
        options["region"] = region[1]
    elif not endpoint:
        try:
            options["region"] = pafs.resolve_s3_region(_s3_path(uri).split("/", 1)[0])
        except (OSError, ValueError) as exc:
            found = f"cannot find the bucket's region ({exc}); {s3_settings()}"
            raise DataError(uri, found) from exc
    return pafs.S3FileSystem(**options)


@dataclass(frozen=True)
class Location:
    """A file or folder on some filesystem, and the name errors give it."""

    fs: pafs.FileSystem
    path: str  # the filesystem's own path: absolute on disk, ``bucket/key`` on S3
    shown: str  # the local path as given, or the s3:// URI
    remote: bool = False

    def __str__(self) -> str:
        return self.shown

    def __truediv__(self, name: str) -> Location:
        if self.remote:
            return Location(self.fs, f"{self.path}/{name}", f"{self.shown}/{name}", True)
        return Location(self.fs, os.path.join(self.path, name), str(Path(self.shown) / name))

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    def local_path(self) -> Path:
        """The path on disk (as given); only for local locations."""
        if self.remote:
            raise ValueError(f"{self.shown} is not on the local disk")
        return Path(self.shown)

    def error(self, exc: Exception, what: str = "cannot read it") -> DataError:
        """A ``DataError`` naming this location; on S3 it says which settings were used."""
        text = f"{what} ({exc})"
        if self.remote:
            if any(sign in str(exc) for sign in DENIED):
                text = f"access denied: wrong credentials or no permission on the bucket ({exc})"
            text += f"; {s3_settings()}"
        return DataError(self.shown, text)

    def info(self) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as exc:
            raise self.error(exc) from exc

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def files(self, suffix: str) -> list[Location]:
        """The files directly in this folder whose names end with ``suffix``, by name."""
        try:
            found = self.fs.get_file_info(pafs.FileSelector(self.path))
        except OSError as exc:
            raise self.error(exc, "cannot list it") from exc
        names = sorted(
            f.base_name
            for f in found
            if f.type == pafs.FileType.File and f.base_name.endswith(suffix)
        )
        return [self / name for name in names]

    def missing_reason(self) -> str:
        """Why a folder is absent: on S3, a missing bucket is said as such."""
        if self.remote:
            bucket = Location(self.fs, self.bucket, f"{S3_SCHEME}{self.bucket}", True)
            if self.path == self.bucket or not bucket.exists():
                return f"bucket '{self.bucket}' does not exist ({s3_settings()})"
        return "dataset directory does not exist"

    def read_text(self) -> str:
        try:
            with self.fs.open_input_stream(self.path) as stream:
                data = stream.read()
        except OSError as exc:
            raise self.error(exc) from exc
        return data.decode("utf-8")

    def open(self) -> pa.NativeFile:
        """A random-access handle (for Parquet readers); access errors name the location."""
        try:
            return self.fs.open_input_file(self.path)
        except OSError as exc:
            raise self.error(exc) from exc

    def parquet_rows(self) -> int:
        with self.open() as handle:
            return pq.ParquetFile(handle).metadata.num_rows


def _s3_path(uri: str) -> str:
    """``bucket/key`` of an s3:// URI, without leading or trailing slashes."""
    path = uri[len(S3_SCHEME) :].strip("/")
    if not path or "?" in path:
        raise DataError(uri, "expected s3://bucket/prefix (no query string)")
    return path


def locate(uri: str | Path | Location) -> Location:
    """The ``Location`` of a local path or an ``s3://bucket/prefix`` URI."""
    if isinstance(uri, Location):
        return uri
    if is_object_uri(uri):
        shown = describe(uri)
        return Location(s3_filesystem(shown), _s3_path(shown), shown, True)
    return Location(pafs.LocalFileSystem(), os.path.abspath(uri), str(Path(uri)))


def describe(uri: str | Path) -> str:
    """What a run records as its source: the resolved local path, or the s3:// URI."""
    return f"{S3_SCHEME}{_s3_path(str(uri))}" if is_object_uri(uri) else str(Path(uri).resolve())
