"""Feedback events in PostgreSQL: one table shared by every serving replica and read by
the pipeline (``serving.feedback.sink: postgres``, docs/serving.md).

The local write-ahead log (``caprank.online.feedback.FeedbackLog``) lives on one pod's
disk; this sink keeps the same promises across replicas:

- **Acknowledged after commit.** One writer thread takes every event queued since its
  last transaction, inserts them in one transaction and resolves their futures only after
  ``COMMIT`` returned (group commit). A failed transaction acknowledges nothing: its posts
  get HTTP 503 and the client retries.
- **Exactly once.** ``event_id`` is the primary key and rows go in with
  ``ON CONFLICT DO NOTHING``; a conflicting id is then read back in the same transaction
  (READ COMMITTED sees the other replica's committed row): the same outcome, time and
  rating is a duplicate, other content is refused with HTTP 409 naming the field, as the
  write-ahead log does.
- **Privacy.** Rows are built by ``build_event`` (policy applied at post time);
  ``enforce_retention`` deletes rows past retention and of opted-out or deleted users.

The table's columns are the data contract's ``INTERACTIONS`` schema (plus ``stored_at``),
so ``PostgresEvents.read_events`` returns the table ``read_events`` returns for a log.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Collection
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from caprank.config import PrivacyConfig
from caprank.data.schemas import INTERACTIONS
from caprank.online.feedback import DUPLICATE, STORED, content_of, stored_conflict
from caprank.online.request import StoreUnavailable
from caprank.privacy import matches
from caprank.pseudonym import IdProtector

log = logging.getLogger(__name__)

_SQL_TYPES = {
    pa.string(): "text",
    pa.timestamp("us", tz="UTC"): "timestamptz",
    pa.list_(pa.string()): "text[]",
    pa.int32(): "integer",
    pa.int8(): "smallint",
    pa.float64(): "double precision",
}
COLUMNS = tuple(INTERACTIONS.names)
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000


def connect(dsn: str):
    """A connection in UTC with bounded connect and statement times (psycopg 3)."""
    import psycopg

    return psycopg.connect(
        re.sub(r"^postgresql\+\w+://", "postgresql://", dsn),  # a SQLAlchemy URL too
        connect_timeout=CONNECT_TIMEOUT_S,
        options=f"-c timezone=UTC -c statement_timeout={STATEMENT_TIMEOUT_MS}",
    )


def _sql(template: str, table: str):
    from psycopg import sql

    return sql.SQL(template).format(
        table=sql.Identifier(table), index=sql.Identifier(f"{table}_timestamp")
    )


def create_table(conn, table: str) -> None:
    """The events table and its time index, if missing (safe to race: replicas start at
    once, and a lost race surfaces as a duplicate-type error, then the table exists)."""
    import psycopg

    cols = ", ".join(
        f'"{f.name}" {_SQL_TYPES[f.type]}'
        + (" PRIMARY KEY" if f.name == "event_id" else "" if f.nullable else " NOT NULL")
        for f in INTERACTIONS
    )
    ddl = "CREATE TABLE IF NOT EXISTS {table} (" + cols
    ddl += ", stored_at timestamptz NOT NULL DEFAULT now())"
    for _ in range(3):
        try:
            with conn.transaction():
                conn.execute(_sql(ddl, table))
                conn.execute(
                    _sql("CREATE INDEX IF NOT EXISTS {index} ON {table} (timestamp)", table)
                )
            return
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            continue


def _unavailable(dsn_table: str, exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(
        f"the feedback store (PostgreSQL table {dsn_table}) did not answer "
        f"({type(exc).__name__}); nothing was stored, retry"
    )


class PostgresEvents:
    """Reader of the events table: what ingest and the quality guardrail read."""

    def __init__(self, dsn: str, table: str):
        self.dsn = dsn
        self.table = table
        self.where = f"PostgreSQL table {table}"

    def read_events(self, since: datetime | None = None) -> pa.Table:
        """Every committed event (at or after ``since``), one row per event id, in the
        ``INTERACTIONS`` schema; an absent table holds none. ``StoreUnavailable`` when
        PostgreSQL does not answer."""
        import psycopg

        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        query = "SELECT " + cols + " FROM {table}"
        if since is not None:
            query += " WHERE timestamp >= %(since)s"
        query += " ORDER BY timestamp, event_id"
        try:
            with connect(self.dsn) as conn:
                cur = conn.execute(_sql(query, self.table), {"since": since})
                rows = [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
        except psycopg.errors.UndefinedTable:
            return INTERACTIONS.empty_table()
        except psycopg.OperationalError as exc:
            raise _unavailable(self.table, exc) from exc
        return pa.Table.from_pylist(rows, schema=INTERACTIONS)

    def count(self) -> int:
        import psycopg

        try:
            with connect(self.dsn) as conn:
                query = _sql("SELECT count(*) FROM {table}", self.table)
                return conn.execute(query).fetchone()[0]
        except psycopg.OperationalError as exc:
            raise _unavailable(self.table, exc) from exc


class PostgresFeedbackSink:
    """The feedback sink on PostgreSQL: ``append`` resolves after the commit that holds the
    row. Same surface as ``FeedbackLog`` (open, append, compact, enforce_retention, close)."""

    def __init__(
        self,
        dsn: str,
        table: str,
        privacy: PrivacyConfig,
        ids: IdProtector | None = None,
        deletions: Path | None = None,
    ):
        self.events = PostgresEvents(dsn, table)
        self.dsn = dsn
        self.table = table
        self.privacy = privacy
        self.ids = ids
        self.deletions = deletions  # the feedback directory holding deletion requests
        self.stored = 0
        self.commits = 0
        self._queue: queue.Queue = queue.Queue()
        self._conn = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def open(self) -> PostgresFeedbackSink:
        """Connect and create the table if missing (fails here when PostgreSQL is down)."""
        self._conn = connect(self.dsn)
        create_table(self._conn, self.table)
        self._thread = threading.Thread(target=self._writer, name="feedback-pg", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is None:
            return
        done: Future = Future()
        self._queue.put(("stop", done))
        done.result(timeout=30)
        self._thread.join(timeout=5)
        self._thread = None

    def __len__(self) -> int:
        return self.events.count()

    # -------------------------------------------------------------------- appends
    def append(self, row: dict) -> Future:
        """Queue ``row``; the future resolves to 'stored' or 'duplicate' after the commit,
        or fails with ``FeedbackConflict`` (409) or ``StoreUnavailable`` (503)."""
        fut: Future = Future()
        self._queue.put(("row", row, fut))
        return fut

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
                if it[0] == "stop":
                    if self._conn is not None:
                        self._conn.close()
                        self._conn = None
                    it[1].set_result(None)
                    return

    def _commit(self, rows: list) -> None:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.dsn)
            with self._conn.transaction():
                results = [self._insert(row) for _, row, _ in rows]
        except Exception as exc:  # the writer thread must live on: fail this batch only
            log.warning("feedback transaction failed: %s", exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            error = _unavailable(self.table, exc) if isinstance(exc, psycopg.Error) else exc
            for _, _, fut in rows:
                fut.set_exception(error)
            return
        self.commits += 1
        self.stored += sum(r == STORED for r in results)
        for (_, _, fut), result in zip(rows, results, strict=True):
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def _insert(self, row: dict):
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join(f"%({c})s" for c in COLUMNS)
        query = "INSERT INTO {table} (" + cols + ") VALUES (" + marks + ")"
        query += " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        if self._conn.execute(_sql(query, self.table), row).fetchone() is not None:
            return STORED
        held = self._conn.execute(
            _sql(
                "SELECT outcome, execution_time_ms, feedback FROM {table} WHERE event_id = %s",
                self.table,
            ),
            (row["event_id"],),
        ).fetchone()
        if tuple(held) == content_of(row):
            return DUPLICATE
        return stored_conflict(row["event_id"], tuple(held), content_of(row))

    # -------------------------------------------------------------------- privacy
    def compact(self, rotate: bool = False) -> list:
        """Nothing to compact in a database: applies the retention policy instead (the
        runtime calls this every ``serving.feedback.compact_s``); no files written."""
        self.enforce_retention()
        return []

    def enforce_retention(self, now: datetime | None = None) -> int:
        """Delete rows past retention and of opted-out or deleted users."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self.privacy.retention_days)
        with connect(self.dsn) as conn:
            cur = conn.execute(
                _sql("DELETE FROM {table} WHERE timestamp < %s", self.table), (cutoff,)
            )
            dropped = cur.rowcount
        from caprank.erasure import read_deleted  # erasure imports the feedback modules

        deleted = read_deleted(self.deletions) if self.deletions is not None else ()
        return dropped + self.delete_users([*self.privacy.opt_out_users, *deleted])

    def delete_users(self, targets: Collection[str]) -> int:
        """Delete every row whose user matches one of ``targets`` (raw or hashed form)."""
        if not targets:
            return 0
        with connect(self.dsn) as conn:
            users = [
                r[0]
                for r in conn.execute(
                    _sql(
                        "SELECT DISTINCT user_id FROM {table} WHERE user_id IS NOT NULL", self.table
                    )
                )
            ]
            gone = [
                u
                for u, hit in zip(users, matches(users, targets, self.ids).to_pylist(), strict=True)
                if hit
            ]
            if not gone:
                return 0
            cur = conn.execute(
                _sql("DELETE FROM {table} WHERE user_id = ANY(%s)", self.table), (gone,)
            )
            return cur.rowcount
