"""Ingest and validation from object storage (``s3://bucket/prefix``) against a real
S3-compatible server on loopback: the same files give the same run as a local directory,
and bad files, missing buckets and refused credentials fail naming the s3:// URI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caprank.cli import main
from caprank.data.dataset import load_dataset
from caprank.data.ingest import ingest
from caprank.data.schemas import INTERACTION_PARTS_DIR, TABLES
from caprank.data.validation import validate_dataset
from caprank.errors import DataError
from tests.s3_server import free_port, moto_api, moto_s3, point_env_at, upload

NOW = datetime.now(UTC).replace(microsecond=0)  # the tiny dataset ends today
URI = "s3://caprank-data/runs/2026-11-01"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty server and a pod-like environment pointing at it; yields the endpoint."""
    moto_api(endpoint, "reset")
    point_env_at(monkeypatch, endpoint)
    return endpoint


@pytest.fixture
def cfg(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"  # no feedback events: the source alone is ingested
    return cfg


@pytest.fixture
def source(tiny_dataset_dir: Path, tmp_path: Path) -> Path:
    """The tiny dataset with its log split into the main file and a part (both read)."""
    root = tmp_path / "source"
    shutil.copytree(tiny_dataset_dir, root)
    logs = pq.read_table(root / TABLES["interactions"].file)
    cut = logs.num_rows // 3
    pq.write_table(logs.slice(cut), root / TABLES["interactions"].file)
    (root / INTERACTION_PARTS_DIR).mkdir()
    pq.write_table(logs.slice(0, cut), root / INTERACTION_PARTS_DIR / "part-0001.parquet")
    return root


def test_ingest_from_s3_equals_local_ingest(cfg, source: Path, s3: str, tmp_path: Path):
    upload(s3, source, URI)
    local = ingest(cfg, source, tmp_path / "from-local", now=NOW)
    remote = ingest(cfg, URI, tmp_path / "from-s3", now=NOW)

    assert remote.source == URI
    assert remote.rows == local.rows and remote.rows["interactions"] > 0
    assert remote.content_hash == local.content_hash
    got, want = load_dataset(remote.out), load_dataset(local.out)
    for name in TABLES:
        assert got.table(name).equals(want.table(name)), name
    manifest = json.loads((remote.out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["ingested_from"] == URI

    # The validator reads S3 through the same reader: the same checks, the same verdicts.
    on_s3, on_disk = validate_dataset(URI, cfg, now=NOW), validate_dataset(source, cfg, now=NOW)
    verdicts = [(c.table, c.check, c.column, c.passed) for c in on_disk.checks]
    assert [(c.table, c.check, c.column, c.passed) for c in on_s3.checks] == verdicts
    assert on_s3.files["interactions"] == [
        f"{URI}/interactions.parquet",
        f"{URI}/{INTERACTION_PARTS_DIR}/part-0001.parquet",
    ]


def test_endpoint_variables_boto3_and_mlflow_users_set(source: Path, s3: str, monkeypatch):
    """AWS_ENDPOINT_URL_S3 outranks AWS_ENDPOINT_URL; MLflow's MLFLOW_S3_ENDPOINT_URL
    alone is enough."""
    upload(s3, source, URI)
    want = load_dataset(source).tools
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3)
    assert load_dataset(URI).tools.equals(want)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3)
    assert load_dataset(URI).tools.equals(want)


def _with_bad_times(source: Path) -> None:
    """Rows 3 and 5 of the main log file hold text where a number belongs."""
    path = source / TABLES["interactions"].file
    logs = pq.read_table(path)
    times = [str(v) for v in logs["execution_time_ms"].to_pylist()]
    times[3], times[5] = "fast", "slow"
    column = logs.schema.get_field_index("execution_time_ms")
    pq.write_table(logs.set_column(column, "execution_time_ms", pa.array(times)), path)


def test_malformed_file_on_s3_names_uri_row_and_field(cfg, source, s3, tmp_path, capsys):
    _with_bad_times(source)
    upload(s3, source, URI)
    file = f"{URI}/interactions.parquet"

    with pytest.raises(DataError) as err:
        ingest(cfg, URI, tmp_path / "out", now=NOW)
    assert (err.value.file, err.value.field, err.value.row) == (file, "execution_time_ms", 3)
    assert str(err.value).startswith(f"{file}, field 'execution_time_ms', row 3: wrong type")
    assert not (tmp_path / "out").exists()

    report = validate_dataset(URI, cfg, now=NOW)
    found = report.failures[0]
    assert (found.file, found.column) == (file, "execution_time_ms")
    assert [(e.file, e.row, e.value) for e in found.examples] == [
        (file, 3, "fast"),
        (file, 5, "slow"),
    ]
    assert main(["data", "validate", URI, "--now", NOW.strftime("%Y-%m-%dT%H:%M:%S")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {file}, field 'execution_time_ms', row 3:")


def test_unreadable_parquet_on_s3_names_uri(source: Path, s3: str):
    labels = source / TABLES["labels"].file
    labels.write_bytes(labels.read_bytes()[:100])
    upload(s3, source, URI)
    with pytest.raises(DataError, match="not a readable Parquet file") as err:
        load_dataset(URI)
    assert err.value.file == f"{URI}/labels.parquet"


def test_missing_bucket_and_missing_prefix_are_said(source: Path, s3: str):
    with pytest.raises(DataError) as err:
        load_dataset("s3://no-such-bucket/data")
    assert err.value.file == "s3://no-such-bucket/data"
    assert "bucket 'no-such-bucket' does not exist" in str(err.value)
    assert f"endpoint {s3} (from AWS_ENDPOINT_URL)" in str(err.value)

    upload(s3, source, URI)
    with pytest.raises(DataError, match="dataset directory does not exist") as err:
        load_dataset("s3://caprank-data/runs/elsewhere/")
    assert err.value.file == "s3://caprank-data/runs/elsewhere"


def test_unreachable_endpoint_is_said(monkeypatch, s3: str):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(DataError) as err:
        load_dataset(URI)
    assert err.value.file == URI
    assert f"endpoint {dead} (from AWS_ENDPOINT_URL)" in str(err.value)


def test_credentials_are_checked_and_refusals_said(cfg, source, s3, monkeypatch, tmp_path):
    """With the server checking signatures and IAM policies, the env's keys are what the
    read signs with: a user's own key reads, a wrong secret or unknown key is refused."""
    import boto3

    iam = boto3.client("iam", endpoint_url=s3, region_name="us-east-1")
    iam.create_user(UserName="pipeline")
    key = iam.create_access_key(UserName="pipeline")["AccessKey"]
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    policy = {"Version": "2012-10-17", "Statement": [allow]}
    iam.put_user_policy(UserName="pipeline", PolicyName="s3", PolicyDocument=json.dumps(policy))
    upload(s3, source, URI)
    moto_api(s3, "reset-auth", "0")
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        assert ingest(cfg, URI, tmp_path / "out", now=NOW).rows["tools"] > 0

        for key_id, secret in [(key["AccessKeyId"], "wrong"), ("AKIAUNKNOWN0000000000", "x")]:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
            with pytest.raises(DataError) as err:
                load_dataset(URI)
            assert err.value.file == URI
            text = str(err.value)
            assert "credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in text
            assert "access denied: wrong credentials or no permission on the bucket" in text
    finally:
        moto_api(s3, "reset-auth", "inf")


def test_ingest_component_takes_an_s3_data_uri(cfg, source: Path, s3: str, tmp_path: Path):
    """The pipeline's ingest step gets ``data_uri`` as a string parameter, s3:// included."""
    from kfp.dsl import Dataset, Markdown

    from caprank.config import dump_yaml
    from pipelines.training import make_components

    upload(s3, source, URI)
    dataset = Dataset(name="dataset", uri=str(tmp_path / "dataset"), metadata={})
    summary = Markdown(name="summary", uri=str(tmp_path / "summary.md"), metadata={})
    ops = make_components(cfg)
    ops.ingest.python_func(
        data_uri=URI, config_yaml=dump_yaml(cfg), dataset=dataset, summary=summary
    )
    local = ingest(cfg, source, tmp_path / "local")
    assert dataset.metadata["content_hash"] == local.content_hash
    assert URI in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_data_options_keep_s3_uris_and_check_local_folders(tmp_path: Path):
    import click

    from caprank.cli.options import DataUri

    kind = DataUri(exists=True)
    assert kind.convert(URI, None, None) == URI
    assert kind.convert(str(tmp_path), None, None) == tmp_path
    with pytest.raises(click.BadParameter, match="does not exist"):
        kind.convert(str(tmp_path / "nowhere"), None, None)
