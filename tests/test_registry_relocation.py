"""Relocatable state (issue 13): a caprank home with its embedded MLflow registry can be
moved as a whole and still serve its registered model; a download that finds nothing is
an error naming what is missing where, never a ``.complete`` empty folder, and is retried
on the next call."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from caprank import registry
from caprank.config import CaprankConfig
from caprank.online.models import find_model_root, resolve_model_ref, save_dense_model


def _cfg(home: Path, model_name: str) -> CaprankConfig:
    cfg = CaprankConfig()
    cfg.paths.home = home  # embedded default: SQLite store and artifacts under the home
    cfg.services.registered_model = model_name
    return cfg


def _home_with_a_model(home: Path) -> CaprankConfig:
    cfg = _cfg(home, f"reloc-{uuid.uuid4().hex[:6]}")
    model_dir = save_dense_model(home / "work" / "m1", "all-MiniLM-L6-v2", version="dense-1")
    with registry.Tracker(cfg, "reloc") as tracker:
        run_id = tracker.run_id
    registry.log_model_dir(cfg, run_id, model_dir)
    lineage = registry.make_lineage(cfg, {"dataset": "a" * 64})
    registry.register_version(cfg, run_id, lineage=lineage, alias=registry.PRODUCTION)
    return cfg


def test_a_moved_home_serves_its_registered_model(tmp_path):
    cfg = _home_with_a_model(tmp_path / "before" / ".caprank")
    moved = tmp_path / "after" / "project" / ".caprank"
    moved.parent.mkdir(parents=True)
    shutil.move(cfg.paths.home, moved)
    assert not (tmp_path / "before" / ".caprank").exists()
    cfg2 = _cfg(moved, cfg.services.registered_model)
    local, version = resolve_model_ref(cfg2, registry.PRODUCTION)
    assert version == "1" and local.is_relative_to(moved)
    assert (find_model_root(local) / "dense_ranker.json").is_file()
    uri = registry.version_storage_uri(cfg2, "1")
    assert str(moved) in uri and Path(uri.removeprefix("file://")).is_dir()
    with registry.Tracker(cfg2, "after the move") as tracker:  # new runs log in the new home
        tracker.log_dict({"a": 1}, "x.json")
        where = registry.client(cfg2).get_run(tracker.run_id).info.artifact_uri
    assert where.startswith(Path(cfg2.mlflow_artifact_root()).as_uri())
    assert not (tmp_path / "before" / ".caprank").exists()  # nothing written at the old place


def test_a_failed_download_names_what_is_missing_and_is_retried(tmp_path):
    cfg = _home_with_a_model(tmp_path / ".caprank")
    artifacts = Path(cfg.mlflow_artifact_root())
    hidden = tmp_path / "hidden-artifacts"
    shutil.move(artifacts, hidden)  # the artifact store lost its files
    target = tmp_path / "download"
    with pytest.raises(registry.RegistryError) as err:
        registry.download_version(cfg, "1", target)
    message = str(err.value)
    assert "version 1" in message and str(artifacts) in message
    assert not target.exists()  # no folder marked .complete with nothing in it
    shutil.move(hidden, artifacts)
    got = registry.download_version(cfg, "1", target)  # retried, not skipped
    assert (got / ".complete").is_file() and (find_model_root(got) / "dense_ranker.json").is_file()


def test_an_empty_download_marked_complete_is_downloaded_again(tmp_path):
    cfg = _home_with_a_model(tmp_path / ".caprank")
    target = tmp_path / "download"
    target.mkdir()
    (target / ".complete").write_text("1")  # what an earlier, broken download left
    got = registry.download_version(cfg, "1", target)
    assert (find_model_root(got) / "dense_ranker.json").is_file()
