"""Which feedback sink and which reader of its events a process uses, from the config
(docs/serving.md, docs/cluster.md).

``serving.feedback.sink``: ``wal`` (default) is the embedded write-ahead log under
``serving.feedback.dir``, one replica's disk; ``postgres`` is the table
``serving.feedback.table`` in ``services.feedback_dsn``, shared by every replica. Serving
writes through ``open_sink``; ingest and the canary's quality guardrail read through
``event_reader``, the one interface over both (``read_events(since=None)`` returns the
``INTERACTIONS`` table, one row per event id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pyarrow as pa

from caprank.config import CaprankConfig
from caprank.errors import ConfigError
from caprank.online.feedback import FeedbackLog, WalEvents
from caprank.online.feedback_pg import PostgresEvents, PostgresFeedbackSink
from caprank.pseudonym import IdProtector


class EventReader(Protocol):
    where: str  # for reports: the log's directory or the table (never a password)

    def read_events(self, since: datetime | None = None) -> pa.Table: ...


def feedback_dsn(cfg: CaprankConfig) -> str:
    """``services.feedback_dsn``; an error naming the key when the sink needs it unset."""
    if not cfg.services.feedback_dsn:
        raise ConfigError(
            "services.feedback_dsn",
            "is empty but serving.feedback.sink is postgres: set it (env "
            "CAPRANK_SERVICES__FEEDBACK_DSN, from the caprank-credentials Secret)",
        )
    return cfg.services.feedback_dsn


def event_reader(cfg: CaprankConfig) -> EventReader:
    """The reader of the configured sink's events."""
    fb = cfg.serving.feedback
    if fb.sink == "postgres":
        return PostgresEvents(feedback_dsn(cfg), fb.table)
    return WalEvents(cfg.feedback_dir())


def open_sink(cfg: CaprankConfig, ids: IdProtector | None) -> FeedbackLog | PostgresFeedbackSink:
    """The configured sink, opened (log recovery, or connection and table creation)."""
    fb = cfg.serving.feedback
    if fb.sink == "postgres":
        return PostgresFeedbackSink(
            feedback_dsn(cfg), fb.table, cfg.privacy, ids, cfg.feedback_dir()
        ).open()
    return FeedbackLog(cfg.feedback_dir(), cfg.privacy, fb.segment_events, ids).open()
