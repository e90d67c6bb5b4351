"""The feedback path: validated outcome posts become interaction events, durably.

Durability design (docs/serving.md):

- **Write-ahead log.** Accepted events are appended as checksummed JSON lines to the
  active segment ``<feedback_dir>/wal/seg-<n>.log`` by one writer thread. It takes every
  event queued since its last write, writes them together and calls ``fsync`` once
  (group commit); each post is acknowledged only after the fsync that covers it.
- **Compaction.** Closed segments (rotated after ``serving.feedback.segment_events``
  events, on ``compact()``, and all segments found at start-up) are turned into
  ``<feedback_dir>/interactions/part-<n>.parquet`` in the data contract's
  ``INTERACTIONS`` schema (atomic write), then deleted. A crash between the two steps
  rewrites the same part from the same segment: compaction is idempotent. The pipeline's
  ingest (``caprank.data.ingest.read_feedback``) reads those parts.
- **Exactly once.** The event id is a hash of (request id, selected capability), and the
  log keeps the set of ids it holds (rebuilt from parts and segments at start-up), so a
  retried post is acknowledged as a duplicate and not stored twice. A line torn by a
  crash fails its checksum and is skipped; it was never acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
import zlib
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from caprank.config import PrivacyConfig
from caprank.data.schemas import INTERACTION_PARTS_DIR, INTERACTIONS, OUTCOMES
from caprank.files import _fsync_dir, atomic_write_parquet
from caprank.online.request import MAX_ID_CHARS, RequestError, check_id
from caprank.online.served import ServedRanking
from caprank.privacy import apply_policy
from caprank.pseudonym import IdProtector

log = logging.getLogger(__name__)

WAL_DIR = "wal"
MAX_EXECUTION_MS = 86_400_000  # one day: a longer "execution" is a broken client
_SEGMENT = re.compile(r"^seg-(\d{12})\.log$")
_PART = re.compile(r"^part-(\d{12})\.parquet$")
FEEDBACK_FIELDS = (
    "request_id",
    "selected_capability",
    "outcome",
    "execution_time_ms",
    "rating",
    "user_id",
    "session_id",
)
STORED, DUPLICATE, DROPPED = "stored", "duplicate", "dropped"


@dataclass(frozen=True)
class FeedbackPost:
    request_id: str
    selected_capability: str
    outcome: str
    execution_time_ms: float
    rating: int | None = None
    user_id: str | None = None
    session_id: str | None = None


def _id_field(body: Mapping[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(name, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise RequestError(name, "must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise RequestError(name, f"is longer than {MAX_ID_CHARS} characters")
    return check_id(value, name)


def parse_feedback(body: Any) -> FeedbackPost:
    """Validate a feedback post; raises ``RequestError`` naming the field."""
    if not isinstance(body, Mapping):
        raise RequestError("<request>", f"must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(FEEDBACK_FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"unknown field (allowed: {', '.join(FEEDBACK_FIELDS)})")
    request_id = _id_field(body, "request_id", True)
    selected = _id_field(body, "selected_capability", True)
    outcome = body.get("outcome")
    if outcome not in OUTCOMES:
        raise RequestError("outcome", f"must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    ms = body.get("execution_time_ms")
    if ms is None:
        raise RequestError("execution_time_ms", "is required")
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        raise RequestError("execution_time_ms", f"must be a number, got {type(ms).__name__}")
    if not math.isfinite(ms) or not 0 <= ms <= MAX_EXECUTION_MS:
        raise RequestError(
            "execution_time_ms", f"must be between 0 and {MAX_EXECUTION_MS} (one day), got {ms}"
        )
    rating = body.get("rating")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)):
        raise RequestError("rating", f"must be an integer 1-5, got {rating!r}")
    if rating is not None and not 1 <= rating <= 5:
        raise RequestError("rating", f"must be between 1 and 5, got {rating}")
    return FeedbackPost(
        request_id=request_id,  # type: ignore[arg-type]
        selected_capability=selected,  # type: ignore[arg-type]
        outcome=outcome,
        execution_time_ms=float(ms),
        rating=rating,
        user_id=_id_field(body, "user_id", False),
        session_id=_id_field(body, "session_id", False),
    )


def event_id(request_id: str, capability_id: str) -> str:
    """Deterministic id of the event for one selection in one served request."""
    return hashlib.sha256(f"{request_id}\0{capability_id}".encode()).hexdigest()[:32]


def build_event(
    post: FeedbackPost,
    served: ServedRanking,
    privacy: PrivacyConfig,
    now: datetime,
    ids: IdProtector | None = None,
) -> dict | None:
    """The interaction row for ``post``, or None when the privacy policy drops it.

    Raises ``RequestError`` (HTTP 422) when the selected capability was not shown.
    """
    if post.selected_capability not in served.shown:
        raise RequestError(
            "selected_capability",
            f"'{post.selected_capability}' was not in the ranking served for request "
            f"'{post.request_id}'",
            status=422,
        )
    row = {
        "event_id": event_id(post.request_id, post.selected_capability),
        "timestamp": now,
        "session_id": post.session_id or served.session_id or post.request_id,
        "user_id": post.user_id or served.user_id,
        "intent_id": None,
        "intent_text": served.intent_text,
        "context_tools": list(served.context_tools),
        "candidate_ids": list(served.shown),
        "selected_capability": post.selected_capability,
        "rank": served.shown.index(post.selected_capability) + 1,
        "outcome": post.outcome,
        "execution_time_ms": post.execution_time_ms,
        "feedback": post.rating,
        "propensity": 1.0,  # the served ranking is deterministic given the request
        "model_version": served.model_version,
    }
    kept = apply_policy(pa.Table.from_pylist([row], schema=INTERACTIONS), privacy, now, ids)
    if kept.num_rows == 0:
        return None
    for name in ("intent_text", "user_id", "session_id"):
        row[name] = kept[name][0].as_py()
    return row


# ----------------------------------------------------------------- write-ahead log


def _encode_line(row: dict) -> bytes:
    data = dict(row)
    data["timestamp"] = int(row["timestamp"].timestamp() * 1_000_000)
    body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode_line(line: bytes) -> dict | None:
    """The row of a complete line, or None for a torn or corrupt one."""
    if not line.endswith(b"\n") or len(line) < 10:
        return None
    crc, _, body = line[:-1].partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        data = json.loads(body)
    except ValueError:
        return None
    data["timestamp"] = datetime.fromtimestamp(data["timestamp"] / 1_000_000, UTC)
    return data


def segment_lines(path: Path) -> list[tuple[bytes, dict]]:
    """Every intact line of a segment with its row, in order (stops at the first torn one)."""
    lines = []
    with open(path, "rb") as fh:
        for line in fh:
            row = _decode_line(line)
            if row is None:
                break
            lines.append((line, row))
    return lines


def read_segment(path: Path) -> list[dict]:
    """Every intact row of a segment, in order (stops at the first torn line)."""
    return [row for _, row in segment_lines(path)]


class FeedbackLog:
    """Append-only, fsync'd, compacted interaction log under ``root``."""

    def __init__(
        self,
        root: str | Path,
        privacy: PrivacyConfig,
        segment_events: int = 5000,
        ids: IdProtector | None = None,
    ):
        self.root = Path(root)
        self.privacy = privacy
        self.ids = ids
        self.segment_events = segment_events
        self.wal_dir = self.root / WAL_DIR
        self.parts_dir = self.root / INTERACTION_PARTS_DIR
        self._known: set[str] = set()
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._fh = None
        self._active: Path | None = None
        self._seq = 0
        self._written = 0
        self.stored = 0
        self.commits = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def open(self) -> FeedbackLog:
        """Recover: compact every segment left by a previous process, index the ids."""
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        seqs = [int(m.group(1)) for p in self.wal_dir.iterdir() if (m := _SEGMENT.match(p.name))]
        seqs += [int(m.group(1)) for p in self.parts_dir.iterdir() if (m := _PART.match(p.name))]
        self._seq = max(seqs, default=0)
        self._compact_segments(self._segments())
        for part in sorted(self.parts_dir.glob("part-*.parquet")):
            self._known.update(pq.read_table(part, columns=["event_id"])["event_id"].to_pylist())
        self._open_segment()
        self._thread = threading.Thread(target=self._writer, name="feedback-wal", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Flush, stop the writer and compact everything (a clean shutdown)."""
        if self._thread is None:
            return
        done: Future = Future()
        self._queue.put(("stop", done))
        done.result(timeout=30)
        self._thread.join(timeout=5)
        self._thread = None
        self._compact_segments(self._segments())

    def __len__(self) -> int:
        return len(self._known)

    # -------------------------------------------------------------------- appends
    def append(self, row: dict) -> Future:
        """Queue ``row``; the future resolves to 'stored' after fsync, or 'duplicate'."""
        eid = row["event_id"]
        with self._lock:
            pending = self._pending.get(eid)
            if pending is not None:
                dup: Future = Future()
                pending.add_done_callback(
                    lambda f: (
                        dup.set_exception(f.exception())
                        if f.exception()
                        else dup.set_result(DUPLICATE)
                    )
                )
                return dup
            if eid in self._known:
                done: Future = Future()
                done.set_result(DUPLICATE)
                return done
            fut: Future = Future()
            self._known.add(eid)
            self._pending[eid] = fut
        self._queue.put(("row", row, fut))
        return fut

    def _open_segment(self) -> None:
        self._seq += 1
        self._active = self.wal_dir / f"seg-{self._seq:012d}.log"
        self._fh = open(self._active, "ab")  # noqa: SIM115 (held open by the writer)
        _fsync_dir(self.wal_dir)
        self._written = 0

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._open_segment()

    def _writer(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [it for it in items if it[0] == "row"]
            if rows:
                self._commit(rows)
            for it in items:
                if it[0] == "rotate":
                    if self._written:
                        self._rotate()
                    it[1].set_result(None)
                elif it[0] == "stop":
                    if self._fh is not None:
                        self._fh.close()
                        self._fh = None
                    it[1].set_result(None)
                    return
            if self._written >= self.segment_events:
                self._rotate()
                threading.Thread(target=self.compact, daemon=True).start()

    def _commit(self, rows: list) -> None:
        try:
            self._fh.write(b"".join(_encode_line(r[1]) for r in rows))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except Exception as exc:
            with self._lock:
                for _, row, _ in rows:
                    self._known.discard(row["event_id"])
                    self._pending.pop(row["event_id"], None)
            for _, _, fut in rows:
                fut.set_exception(exc)
            return
        self._written += len(rows)
        self.stored += len(rows)
        self.commits += 1
        with self._lock:
            for _, row, _ in rows:
                self._pending.pop(row["event_id"], None)
        for _, _, fut in rows:
            fut.set_result(STORED)

    # ----------------------------------------------------------------- compaction
    def _policy(self, table: pa.Table, now: datetime) -> pa.Table:
        """The privacy policy, with deletion requests made since start-up."""
        from caprank.erasure import read_deleted  # erasure imports this module

        return apply_policy(table, self.privacy, now, self.ids, read_deleted(self.root))

    def _segments(self) -> list[Path]:
        active = self._active
        return sorted(p for p in self.wal_dir.glob("seg-*.log") if p != active)

    def compact(self, rotate: bool = False) -> list[Path]:
        """Turn closed segments into Parquet parts (with ``rotate``, the active one too)."""
        if rotate and self._thread is not None:
            done: Future = Future()
            self._queue.put(("rotate", done))
            done.result(timeout=30)
        return self._compact_segments(self._segments())

    def _compact_segments(self, segments: list[Path]) -> list[Path]:
        written = []
        with self._compact_lock:
            for seg in segments:
                if not seg.exists():
                    continue
                rows = read_segment(seg)
                if rows:
                    table = pa.Table.from_pylist(rows, schema=INTERACTIONS)
                    table = self._policy(table, datetime.now(UTC))
                    seq = _SEGMENT.match(seg.name).group(1)
                    part = self.parts_dir / f"part-{seq}.parquet"
                    atomic_write_parquet(table, part)
                    written.append(part)
                    self._known.update(r["event_id"] for r in rows)
                seg.unlink()
                _fsync_dir(self.wal_dir)
        return written

    def enforce_retention(self, now: datetime | None = None) -> int:
        """Rewrite parts without events past retention or from opted-out users."""
        now = now or datetime.now(UTC)
        dropped = 0
        with self._compact_lock:
            for part in sorted(self.parts_dir.glob("part-*.parquet")):
                table = pq.read_table(part)
                kept = self._policy(table, now)
                if kept.num_rows == table.num_rows:
                    continue
                dropped += table.num_rows - kept.num_rows
                if kept.num_rows:
                    atomic_write_parquet(kept.cast(INTERACTIONS), part)
                else:
                    part.unlink()
        return dropped
