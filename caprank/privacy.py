"""Privacy policy applied wherever interaction events enter the system.

PII scrubbing (caprank.scrub) replaces e-mails, phone numbers, card and account numbers
and IP addresses in free text with typed placeholders; identifiers that look like personal
data are keyed-hashed (caprank.pseudonym); retention, opt-out and deletion requests drop
events entirely.
The serving feedback path and the pipeline's ingest both use these functions.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import PrivacyConfig
from caprank.pseudonym import IdProtector, normalize_id
from caprank.scrub import scrub_pii


def matches(ids: list[str | None], targets: Collection[str], protector: IdProtector | None):
    """Which ``ids`` are in ``targets`` (compared canonically: normalized, or hashed)."""
    key = protector.canonical if protector else normalize_id
    wanted = {key(t) for t in targets}
    hit = {i: key(i) in wanted for i in set(ids) if i is not None}  # ids repeat: once each
    return pa.array([hit.get(i, False) for i in ids], pa.bool_())


def _protect_column(table: pa.Table, name: str, protector: IdProtector) -> pa.Table:
    raw = table[name].to_pylist()
    protected = {v: protector.protect(v, name) for v in set(raw) if v is not None}
    field = table.schema.field(name)
    values = pa.array([protected.get(v) for v in raw], field.type)
    return table.set_column(table.schema.get_field_index(name), field, values)


def apply_policy(
    interactions: pa.Table,
    policy: PrivacyConfig,
    now: datetime,
    ids: IdProtector | None = None,
    deleted: Collection[str] = (),
) -> pa.Table:
    """Drop events past retention, from opted-out or ``deleted`` users; scrub PII.

    With ``ids`` (the protector), user and session ids that look like personal data are
    hashed; in batch data ``reject`` also hashes (a stored file cannot be answered 400),
    and ``keep`` leaves them. ``deleted`` holds canonical ids (docs/security.md).
    """
    table = interactions
    if table.num_rows == 0:
        return table
    cutoff = pa.scalar(now - timedelta(days=policy.retention_days), type=table["timestamp"].type)
    keep = pc.greater_equal(table["timestamp"], cutoff)
    targets = [*policy.opt_out_users, *deleted]
    if targets:
        gone = matches(table["user_id"].to_pylist(), targets, ids)
        keep = pc.and_(keep, pc.invert(gone))
    table = table.filter(keep)
    if ids is not None and ids.mode != "keep" and table.num_rows:
        batch = IdProtector("hash", ids.key)
        for name in ("user_id", "session_id"):
            table = _protect_column(table, name, batch)
    if policy.scrub_pii and table.num_rows:
        texts = table["intent_text"].to_pylist()
        scrubbed = pa.array([scrub_pii(t) for t in texts], pa.string())
        table = table.set_column(
            table.schema.get_field_index("intent_text"), "intent_text", scrubbed
        )
    return table
