"""Identifiers that look like PII are keyed-hashed or refused, opt-out matches a normalized
id, and a deletion request removes a user's events from the feedback log and the next
dataset."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from caprank.cli import cli
from caprank.config import PrivacyConfig
from caprank.data.dataset import load_dataset, write_dataset
from caprank.data.ingest import ingest
from caprank.data.schemas import INTERACTIONS
from caprank.erasure import DELETED_FILE, delete_user, read_deleted
from caprank.errors import CaprankError
from caprank.online.feedback import FeedbackLog, read_segment
from caprank.online.runtime import Runtime
from caprank.privacy import apply_policy
from caprank.pseudonym import IdProtector, PiiIdError, id_protector, normalize_id

KEY_ENV = "CAPRANK_SECRET_ID_HASH_KEY"


def _cfg(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.paths.home = tmp_path / "home"
    return cfg


def _row(i: int, user: str | None, session: str = "s", days: float = 0.0) -> dict:
    return {
        "event_id": f"e{i}", "timestamp": datetime.now(UTC) - timedelta(days=days),
        "session_id": session, "user_id": user, "intent_id": None, "intent_text": "t",
        "context_tools": [], "candidate_ids": ["a"], "selected_capability": "a", "rank": 1,
        "outcome": "success", "execution_time_ms": 1.0, "feedback": None, "propensity": 1.0,
        "model_version": "v",
    }  # fmt: skip


def test_pii_looking_ids_are_hashed_with_the_key_others_kept():
    ids = IdProtector("hash", b"k1")
    hashed = ids.protect("Jane.Doe@Example.com", "user_id")
    assert hashed.startswith("h:") and "jane" not in hashed.lower()
    assert ids.protect(" jane.doe@example.com", "user_id") == hashed  # normalized first
    assert IdProtector("hash", b"k2").protect("jane.doe@example.com", "user_id") != hashed
    assert ids.protect("+1 415 555 0132", "session_id").startswith("h:")
    assert ids.protect("2001:db8::1", "session_id").startswith("h:")
    assert ids.protect("u-1", "user_id") == "u-1"  # a pseudonymous id stays readable
    assert ids.protect(hashed, "user_id") == hashed  # hashing is idempotent
    assert IdProtector("keep", b"k1").protect("jane@example.com", "user_id") == "jane@example.com"
    with pytest.raises(PiiIdError, match="user_id looks like personal data"):
        IdProtector("reject", b"k1").protect("jane@example.com", "user_id")


def test_key_from_env_or_per_install_file_or_loud_failure(tiny_cfg, tmp_path, monkeypatch):
    cfg = _cfg(tiny_cfg, tmp_path)
    monkeypatch.delenv(KEY_ENV, raising=False)
    first = id_protector(cfg)
    key_file = cfg.paths.home / "secrets" / "id_hash.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert id_protector(cfg).key == first.key  # stable across restarts of one install
    monkeypatch.setenv(KEY_ENV, "from-the-secret")
    assert id_protector(cfg).key == b"from-the-secret"
    monkeypatch.delenv(KEY_ENV)
    cfg.privacy.require_id_hash_key = True
    with pytest.raises(CaprankError, match=KEY_ENV):
        Runtime(cfg, "dense").start(background_load=False)  # fails before loading anything


def test_apply_policy_hashes_ids_and_opt_out_matches_normalized_and_hashed():
    ids = IdProtector("hash", b"k")
    now = datetime.now(UTC)
    rows = [_row(0, "jane@example.com", "+44 20 7946 0958"), _row(1, "ＵＳＥＲ-7 "),
            _row(2, ids.hash("bob@example.com")), _row(3, "u-keep")]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=INTERACTIONS)
    policy = PrivacyConfig(opt_out_users=["user-7", "BOB@example.com "])
    out = apply_policy(table, policy, now, ids)
    assert out["event_id"].to_pylist() == ["e0", "e3"]
    assert out["user_id"].to_pylist() == [ids.hash("jane@example.com"), "u-keep"]
    assert out["session_id"][0].as_py() == ids.hash("+44 20 7946 0958")
    # without a protector (plain batch use) opt-out still compares normalized ids
    assert apply_policy(table, policy, now)["event_id"].to_pylist() == ["e0", "e2", "e3"]
    assert normalize_id(" Ｊane@Example.COM ") == "jane@example.com"


def _log_with_user_events(cfg, ids: IdProtector) -> FeedbackLog:
    """Two compacted parts and one closed segment holding the user in raw and hashed form."""
    log = FeedbackLog(cfg.feedback_dir(), cfg.privacy, segment_events=1000).open()
    for i, user in enumerate(["Jane@Example.com", "u-other"]):
        log.append(_row(i, user)).result()
    log.compact(rotate=True)
    for i, user in enumerate([ids.hash("jane@example.com"), "u-other", None], start=10):
        log.append(_row(i, user)).result()
    log._queue.put(("stop", type(log.append(_row(99, "u-x")))()))  # stop without compaction
    log._thread.join()
    return log


def test_delete_user_rewrites_parts_and_segments_and_the_next_dataset(
    tiny_cfg, tiny_dataset_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, "k")
    cfg = _cfg(tiny_cfg, tmp_path)
    ids = id_protector(cfg)
    _log_with_user_events(cfg, ids)
    root = cfg.feedback_dir()
    assert list((root / "wal").glob("seg-*.log"))
    report = delete_user(cfg, "  jane@EXAMPLE.com")
    assert report.events_removed == 2 and report.user == ids.hash("jane@example.com")
    remaining = [r["user_id"] for p in (root / "interactions").glob("*.parquet")
                 for r in pq.read_table(p).to_pylist()]  # fmt: skip
    remaining += [r["user_id"] for s in (root / "wal").glob("seg-*.log") for r in read_segment(s)]
    assert sorted(map(str, remaining)) == ["None", "u-other", "u-other", "u-x"]
    tomb = (root / DELETED_FILE).read_text(encoding="utf-8")
    assert "jane" not in tomb.lower() and read_deleted(root) == {report.user}
    # the next dataset: a source dataset holding the user loses those events too
    src = load_dataset(tiny_dataset_dir)
    victim = src.interactions["user_id"][0].as_py()
    n_victim = src.interactions["user_id"].to_pylist().count(victim)
    delete_user(cfg, victim.upper())
    result = ingest(cfg, write_dataset(src, tmp_path / "src"), tmp_path / "out")
    out = load_dataset(result.out).interactions
    assert victim not in out["user_id"].to_pylist()
    assert result.dropped_by_privacy == n_victim


def test_delete_user_cli(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k")
    cfg = _cfg(tiny_cfg, tmp_path)
    _log_with_user_events(cfg, id_protector(cfg))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(json.dumps({"paths": {"home": str(cfg.paths.home)}}), encoding="utf-8")
    out = CliRunner().invoke(cli, ["--config", str(cfg_file), "privacy", "delete-user",
                                   "jane@example.com"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "2 events removed" in out.output and "jane" not in out.output
