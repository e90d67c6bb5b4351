"""Served rankings kept so feedback can be turned into interaction events.

A feedback post names only the (server-issued) request id; the intent text, context,
shown ranking, model version, user and session come from here. The store is bounded
(``serving.feedback.request_store_size``) and entries expire after
``serving.feedback.request_store_ttl_s`` (wall-clock, so the age survives a restart):
feedback for an unknown or expired request id is refused with HTTP 404 rather than stored
without its context.

``RequestStore`` is in memory (the deploy stage's in-process canary). A server uses
``DurableRequestStore``: every ranking is also appended to a checksummed log under
``<feedback_dir>/served/`` before the answer leaves, and the log is replayed at start-up,
so feedback for a ranking served before a crash or restart is still accepted within the
retention window. The append reaches the operating system at once (it survives the
process being killed); a background thread ``fsync``s it every
``serving.feedback.request_store_fsync_s`` (a machine crash loses at most that much).
Segments whose rankings have all expired or been evicted are deleted.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from caprank.files import _fsync_dir
from caprank.online.journal import encode_line, read_records

log = logging.getLogger(__name__)

SERVED_DIR = "served"
_SEGMENT = re.compile(r"^seg-(\d{12})\.log$")


@dataclass(frozen=True)
class ServedRanking:
    request_id: str
    intent_text: str
    context_tools: tuple[str, ...]
    shown: tuple[str, ...]  # capability ids in rank order
    model_version: str
    served_at: datetime
    session_id: str | None = None
    user_id: str | None = None
    # P(shown[k] at position k | request) per position; None: no exploration, all 1
    propensities: tuple[float, ...] | None = None

    def propensity(self, capability_id: str) -> float:
        """The logged propensity of ``capability_id`` at the position it was shown."""
        if self.propensities is None:
            return 1.0
        return self.propensities[self.shown.index(capability_id)]

    def to_record(self, stamp: float) -> dict:
        return {
            "request_id": self.request_id,
            "intent_text": self.intent_text,
            "context_tools": list(self.context_tools),
            "shown": list(self.shown),
            "model_version": self.model_version,
            "served_at": self.served_at.timestamp(),
            "session_id": self.session_id,
            "user_id": self.user_id,
            "propensities": None if self.propensities is None else list(self.propensities),
            "stamp": stamp,
        }

    @classmethod
    def from_record(cls, rec: dict) -> ServedRanking:
        return cls(
            request_id=rec["request_id"],
            intent_text=rec["intent_text"],
            context_tools=tuple(rec["context_tools"]),
            shown=tuple(rec["shown"]),
            model_version=rec["model_version"],
            served_at=datetime.fromtimestamp(rec["served_at"], UTC),
            session_id=rec.get("session_id"),
            user_id=rec.get("user_id"),
            propensities=None if rec.get("propensities") is None else tuple(rec["propensities"]),
        )


class RequestStore:
    """Bounded, expiring map of request id -> served ranking (in memory)."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.time):
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, ServedRanking]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def _insert(self, stamp: float, served: ServedRanking) -> None:
        self._data[served.request_id] = (stamp, served)
        self._data.move_to_end(served.request_id)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def put(self, served: ServedRanking) -> None:
        with self._lock:
            self._insert(self._clock(), served)

    def get(self, request_id: str) -> ServedRanking | None:
        with self._lock:
            item = self._data.get(request_id)
            if item is None:
                return None
            if self._clock() - item[0] > self.ttl_s:
                del self._data[request_id]
                return None
            return item[1]

    def close(self) -> None:
        """Nothing to release in memory (the durable store syncs and closes its log)."""


@dataclass
class _Segment:
    path: Path
    count: int = 0
    oldest: float = float("inf")
    newest: float = float("-inf")


class DurableRequestStore(RequestStore):
    """A ``RequestStore`` whose rankings are appended to ``root`` and replayed by ``open``."""

    def __init__(
        self,
        root: str | Path,
        size: int,
        ttl_s: float,
        fsync_s: float = 0.2,
        clock: Callable[[], float] = time.time,
        scrub: Callable[[str], str] | None = None,
    ):
        super().__init__(size, ttl_s, clock)
        self.root = Path(root)
        self.fsync_s = fsync_s
        self._scrub = scrub
        self._segments: list[_Segment] = []  # closed, oldest first
        self._active: _Segment | None = None
        self._fh = None
        self._seq = 0
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def open(self) -> DurableRequestStore:
        """Replay the unexpired rankings of every segment, then start a new one."""
        self.root.mkdir(parents=True, exist_ok=True)
        now = self._clock()
        for path in sorted(p for p in self.root.iterdir() if _SEGMENT.match(p.name)):
            seg = _Segment(path)
            for rec in read_records(path):
                seg.count += 1
                seg.newest = max(seg.newest, rec["stamp"])
                if now - rec["stamp"] <= self.ttl_s:
                    self._insert(rec["stamp"], ServedRanking.from_record(rec))
            self._segments.append(seg)
            self._seq = max(self._seq, int(_SEGMENT.match(path.name).group(1)))
        self._open_segment()
        self._prune(now)
        self._thread = threading.Thread(target=self._sync_loop, name="served-sync", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None

    # ---------------------------------------------------------------------- writes
    def put(self, served: ServedRanking) -> None:
        """Keep ``served`` and append it to the log (flushed to the OS before returning)."""
        if self._scrub is not None:
            text = self._scrub(served.intent_text)
            if text != served.intent_text:  # no copy when there was nothing to scrub
                served = replace(served, intent_text=text)
        with self._lock:
            stamp = self._clock()
            self._insert(stamp, served)
            if self._fh is None:  # closed: in memory only
                return
            self._fh.write(encode_line(served.to_record(stamp)))
            self._fh.flush()
            self._dirty = True
            seg = self._active
            seg.count += 1
            seg.oldest = min(seg.oldest, stamp)
            seg.newest = stamp
            if seg.count >= max(1, self.size // 4):
                self._rotate(stamp)

    def _open_segment(self) -> None:
        self._seq += 1
        self._active = _Segment(self.root / f"seg-{self._seq:012d}.log")
        self._fh = open(self._active.path, "ab")  # noqa: SIM115 (held open by the store)
        _fsync_dir(self.root)

    def _rotate(self, now: float) -> None:
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._dirty = False
        self._segments.append(self._active)
        self._open_segment()
        self._prune(now)

    def _prune(self, now: float) -> None:
        """Delete closed segments whose rankings all expired or were evicted by newer ones."""
        newer = self._active.count
        keep: list[_Segment] = []
        for seg in reversed(self._segments):
            if now - seg.newest > self.ttl_s or newer >= self.size:
                seg.path.unlink(missing_ok=True)
            else:
                keep.append(seg)
            newer += seg.count
        if len(keep) < len(self._segments):
            _fsync_dir(self.root)
        self._segments = keep[::-1]

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_s):
            fd = None
            with self._lock:
                if self._fh is None:
                    return
                try:
                    if self._dirty:  # a duplicate stays valid if a rotation closes the file
                        fd, self._dirty = os.dup(self._fh.fileno()), False
                    now = self._clock()
                    if self._active.count and now - self._active.oldest > self.ttl_s / 4:
                        self._rotate(now)  # so that expired rankings leave the disk
                    else:
                        self._prune(now)
                except OSError:
                    log.exception("rotating the served-ranking log failed")
            if fd is not None:  # outside the lock: a rank never waits for the disk
                try:
                    os.fsync(fd)
                except OSError:
                    log.exception("syncing the served-ranking log failed")
                finally:
                    os.close(fd)

    @property
    def segment_paths(self) -> list[Path]:
        """Every segment file the store holds (closed, then the active one)."""
        return [s.path for s in self._segments] + ([self._active.path] if self._active else [])
