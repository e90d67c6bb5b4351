"""The feedback path: validated outcome posts become interaction events, durably.

This module holds the validation, the event identity and the embedded sink, a local
write-ahead log (``serving.feedback.sink: wal``); the sink shared by replicas is
``caprank.online.feedback_pg`` (``postgres``), chosen in ``caprank.online.sinks``.

Durability design of the log (docs/serving.md):

- **Write-ahead log.** Accepted events are appended as checksummed JSON lines to the
  active segment ``<feedback_dir>/wal/seg-<n>.log`` by one writer thread. It takes every
  event queued since its last write, writes them together and calls ``fsync`` once
  (group commit); each post is acknowledged only after the fsync that covers it.
- **Compaction.** Closed segments (rotated after ``serving.feedback.segment_events``
  events, on ``compact()``, and all segments found at start-up) are turned into
  ``<feedback_dir>/interactions/part-<n>.parquet`` in the data contract's
  ``INTERACTIONS`` schema (atomic write), then deleted. A crash between the two steps
  rewrites the same part from the same segment: compaction is idempotent. A clean
  shutdown compacts the active segment too. The pipeline's ingest
  (``caprank.data.ingest.read_feedback``) reads those parts and any segment not yet
  compacted (``read_wal``), so an acknowledged event is never invisible to it.
- **Exactly once.** The event id is a hash of (server-issued request id, selected
  capability, the client's optional ``client_event_id``), and the log keeps each id it
  holds with the event's outcome, time and rating (rebuilt from parts and segments at
  start-up): a retry with the same content is acknowledged as a duplicate and not stored
  twice; the same event with a different outcome, time or rating is refused with HTTP 409
  naming the field (never silently dropped); distinct events on one selection carry
  distinct ``client_event_id`` values. A line torn by a crash fails its checksum and is
  skipped; it was never acknowledged.
- **Attribution.** An event's user and session are the ranking's: a post naming another
  ``user_id`` or ``session_id`` is refused (HTTP 422), so the opt-out list is matched
  against the user the ranking was served to.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from caprank.config import PrivacyConfig
from caprank.data.dataset import read_table
from caprank.data.schemas import INTERACTION_PARTS_DIR, INTERACTIONS, OUTCOMES
from caprank.files import _fsync_dir, atomic_write_parquet
from caprank.online.journal import decode_line, encode_line
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
    "client_event_id",
)
STORED, DUPLICATE, DROPPED = "stored", "duplicate", "dropped"
CONTENT_FIELDS = ("outcome", "execution_time_ms", "feedback")  # what a retry must repeat
_POST_NAMES = {"feedback": "rating"}  # row column -> post field


@dataclass(frozen=True)
class FeedbackPost:
    request_id: str
    selected_capability: str
    outcome: str
    execution_time_ms: float
    rating: int | None = None
    user_id: str | None = None
    session_id: str | None = None
    client_event_id: str | None = None


class FeedbackConflict(RequestError):
    """The event was already stored with other content (HTTP 409): never a silent drop."""

    def __init__(self, field: str, message: str):
        super().__init__(field, message, status=409)


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
        client_event_id=_id_field(body, "client_event_id", False),
    )


def event_id(request_id: str, capability_id: str, client_event_id: str | None = None) -> str:
    """Deterministic id of one event: a selection in one served (server-issued) request,
    told apart from other events on that selection by the client's event id."""
    key = f"{request_id}\0{capability_id}"
    if client_event_id is not None:
        key += f"\0{client_event_id}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def content_of(row: Mapping[str, Any]) -> tuple:
    """What a retry of the event must repeat to be a duplicate."""
    return tuple(row[name] for name in CONTENT_FIELDS)


def _attributed(post: FeedbackPost, served: ServedRanking) -> None:
    """Refuse a post that names another user or session than its ranking's."""
    for name in ("user_id", "session_id"):
        sent, held = getattr(post, name), getattr(served, name)
        if sent is not None and sent != held:
            raise RequestError(
                name,
                f"does not match the ranking served for request '{post.request_id}' "
                f"(feedback is attributed to the ranking's {name}; omit the field)",
                status=422,
            )


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
    _attributed(post, served)
    row = {
        "event_id": event_id(post.request_id, post.selected_capability, post.client_event_id),
        "timestamp": now,
        "session_id": served.session_id or post.request_id,
        "user_id": served.user_id,
        "intent_id": None,
        "intent_text": served.intent_text,
        "context_tools": list(served.context_tools),
        "candidate_ids": list(served.shown),
        "selected_capability": post.selected_capability,
        "rank": served.shown.index(post.selected_capability) + 1,
        "outcome": post.outcome,
        "execution_time_ms": post.execution_time_ms,
        "feedback": post.rating,
        # P(the policy shows this capability at this rank | request): 1 unless it explored
        "propensity": served.propensity(post.selected_capability),
        "model_version": served.model_version,
    }
    kept = apply_policy(pa.Table.from_pylist([row], schema=INTERACTIONS), privacy, now, ids)
    if kept.num_rows == 0:
        return None
    for name in ("intent_text", "user_id", "session_id"):
        row[name] = kept[name][0].as_py()
    return row


def stored_conflict(eid: str, held: tuple, sent: tuple) -> FeedbackConflict:
    name, was, now = next(
        (n, a, b) for n, a, b in zip(CONTENT_FIELDS, held, sent, strict=True) if a != b
    )
    return FeedbackConflict(
        _POST_NAMES.get(name, name),
        f"event {eid} is already stored with {was!r}, not {now!r}: a stored event is not "
        "changed; send a new client_event_id for a distinct event",
    )


# ----------------------------------------------------------------- write-ahead log


def _encode_line(row: dict) -> bytes:
    data = dict(row)
    data["timestamp"] = int(row["timestamp"].timestamp() * 1_000_000)
    return encode_line(data)


def _row(data: dict) -> dict:
    data["timestamp"] = datetime.fromtimestamp(data["timestamp"] / 1_000_000, UTC)
    return data


def segment_lines(path: Path) -> list[tuple[bytes, dict]]:
    """Every intact line of a segment with its row, in order (stops at the first torn
    one): erasure rewrites segments line by line."""
    lines = []
    with open(path, "rb") as fh:
        for line in fh:
            data = decode_line(line)
            if data is None:
                break
            lines.append((line, _row(data)))
    return lines


def read_segment(path: Path) -> list[dict]:
    """Every intact row of a segment, in order (stops at the first torn line)."""
    return [row for _, row in segment_lines(path)]


def read_wal(root: str | Path) -> pa.Table:
    """The events of every write-ahead segment under ``root`` not yet compacted (the
    active one included): acknowledged, so the next pipeline run must see them too.

    Read before the parts: a segment compacted meanwhile has its part written before the
    segment is deleted, so a reader that lists segments first never misses its events
    (it may see them twice; ``read_feedback`` keeps one per event id)."""
    rows: list[dict] = []
    wal = Path(root) / WAL_DIR
    for seg in sorted(wal.glob("seg-*.log")) if wal.is_dir() else []:
        try:
            rows += read_segment(seg)
        except FileNotFoundError:  # compacted while we listed: its part holds the rows
            continue
    return pa.Table.from_pylist(rows, schema=INTERACTIONS)


def read_events(root: str | Path) -> pa.Table:
    """Every acknowledged event under ``root``: the Parquet parts, then the events of
    segments not yet compacted, one row per event id (what ingest and the rollout's
    quality guardrail read)."""
    root = Path(root)
    wal = read_wal(root)  # before the parts: see read_wal
    if (root / INTERACTION_PARTS_DIR).is_dir():
        parts = read_table(root, "interactions")
    else:
        parts = INTERACTIONS.empty_table()
    if not wal.num_rows:
        return parts
    held = pa.array(parts["event_id"].to_pylist(), pa.string())
    fresh = wal.filter(pc.invert(pc.is_in(wal["event_id"], value_set=held)))
    return pa.concat_tables([parts, fresh.cast(parts.schema)])


class WalEvents:
    """Reader of a write-ahead log's events (``read_events``), for ingest and the quality
    guardrail (``caprank.online.sinks.event_reader``); a missing directory holds none."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.where = f"feedback log {self.root}"

    def read_events(self, since: datetime | None = None) -> pa.Table:
        if not self.root.is_dir():
            return INTERACTIONS.empty_table()
        table = read_events(self.root)
        if since is None:
            return table
        start = pa.scalar(since, type=table["timestamp"].type)
        return table.filter(pc.greater_equal(table["timestamp"], start))


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
        self._known: dict[str, tuple] = {}  # event id -> content_of(row)
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
            table = pq.read_table(part, columns=["event_id", *CONTENT_FIELDS])
            self._known.update((r["event_id"], content_of(r)) for r in table.to_pylist())
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
        self._active = None  # the active segment is closed now: compact it as well
        self._compact_segments(self._segments())

    def __len__(self) -> int:
        return len(self._known)

    # -------------------------------------------------------------------- appends
    def append(self, row: dict) -> Future:
        """Queue ``row``; the future resolves to 'stored' after fsync, or 'duplicate', or
        fails with ``FeedbackConflict`` when the event is held with other content."""
        eid = row["event_id"]
        with self._lock:
            held = self._known.get(eid)
            if held is not None and held != content_of(row):
                conflict: Future = Future()
                conflict.set_exception(stored_conflict(eid, held, content_of(row)))
                return conflict
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
            self._known[eid] = content_of(row)
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
                    self._known.pop(row["event_id"], None)
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
                    self._known.update((r["event_id"], content_of(r)) for r in rows)
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
