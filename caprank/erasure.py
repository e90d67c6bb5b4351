"""Deleting a user's data: the feedback log's parts and segments (and the PostgreSQL
feedback table when ``serving.feedback.sink`` is postgres), and every later dataset.

``delete_user`` records the user's canonical id (keyed hash of the normalized id, never
the raw id) in ``<feedback_dir>/deleted_users.json``, then rewrites each Parquet part and
write-ahead segment that holds one of the user's events without them (atomic replace per
file). Events are matched on the raw id in any case/width/whitespace and on its hashed form.
The record makes ingest drop the user's events from any source dataset, and a server's
compaction drop events it logged before it saw the request. Run it with the server stopped
(a live server appends to its active segment): docs/security.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank.config import CaprankConfig
from caprank.data.schemas import INTERACTION_PARTS_DIR, INTERACTIONS
from caprank.files import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from caprank.online.feedback import WAL_DIR, segment_lines
from caprank.privacy import matches
from caprank.pseudonym import IdProtector, id_protector

DELETED_FILE = "deleted_users.json"


@dataclass(frozen=True)
class DeletionReport:
    user: str  # the canonical (hashed) id, safe to print and log
    events_removed: int
    files_rewritten: list[Path]


def read_deleted(feedback_dir: Path) -> frozenset[str]:
    """Canonical ids of users whose data was deleted (empty when none was)."""
    path = Path(feedback_dir) / DELETED_FILE
    if not path.exists():
        return frozenset()
    return frozenset(json.loads(path.read_text(encoding="utf-8"))["users"])


def _record(feedback_dir: Path, canonical: str) -> None:
    users = sorted(read_deleted(feedback_dir) | {canonical})
    atomic_write_json(Path(feedback_dir) / DELETED_FILE, {"users": users})


def _rewrite_part(part: Path, user: str, ids: IdProtector) -> int:
    table = pq.read_table(part)
    gone = matches(table["user_id"].to_pylist(), [user], ids)
    removed = pc.sum(gone).as_py() or 0
    if removed:
        kept = table.filter(pc.invert(gone))
        if kept.num_rows:
            atomic_write_parquet(kept.cast(INTERACTIONS), part)
        else:
            part.unlink()
    return removed


def _rewrite_segment(segment: Path, user: str, ids: IdProtector) -> int:
    lines = segment_lines(segment)
    gone = matches([row.get("user_id") for _, row in lines], [user], ids).to_pylist()
    removed = sum(gone)
    if removed:
        atomic_write_bytes(
            segment, b"".join(line for (line, _), g in zip(lines, gone, strict=True) if not g)
        )
    return removed


def delete_user(cfg: CaprankConfig, user_id: str) -> DeletionReport:
    """Remove every event of ``user_id`` from the feedback log and mark it deleted."""
    ids = id_protector(cfg)
    root = cfg.feedback_dir()
    canonical = ids.canonical(user_id)
    _record(root, canonical)
    removed, rewritten = 0, []
    files = [
        *sorted((root / INTERACTION_PARTS_DIR).glob("part-*.parquet")),
        *sorted((root / WAL_DIR).glob("seg-*.log")),
    ]
    for path in files:
        rewrite = _rewrite_part if path.suffix == ".parquet" else _rewrite_segment
        n = rewrite(path, user_id, ids)
        if n:
            removed += n
            rewritten.append(path)
    if cfg.serving.feedback.sink == "postgres":  # the shared table (docs/serving.md)
        from caprank.online.feedback_pg import PostgresFeedbackSink
        from caprank.online.sinks import feedback_dsn

        fb = cfg.serving.feedback
        sink = PostgresFeedbackSink(feedback_dsn(cfg), fb.table, cfg.privacy, ids)
        removed += sink.delete_users([user_id])
    return DeletionReport(canonical, removed, rewritten)
