"""Privacy policy applied wherever interaction events enter the system.

PII scrubbing replaces emails, phone numbers, card and account numbers and IP addresses
in free text with typed placeholders; retention and opt-out drop events entirely.
The serving feedback path and the pipeline's ingest both use these functions.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from caprank.config import PrivacyConfig
from caprank.scrub import scrub_pii


def apply_policy(interactions: pa.Table, policy: PrivacyConfig, now: datetime) -> pa.Table:
    """Drop events past retention or from opted-out users; scrub intent text if enabled."""
    table = interactions
    if table.num_rows == 0:
        return table
    cutoff = pa.scalar(now - timedelta(days=policy.retention_days), type=table["timestamp"].type)
    keep = pc.greater_equal(table["timestamp"], cutoff)
    if policy.opt_out_users:
        opted = pc.is_in(table["user_id"], value_set=pa.array(policy.opt_out_users, pa.string()))
        keep = pc.and_(keep, pc.invert(pc.fill_null(opted, False)))
    table = table.filter(keep)
    if policy.scrub_pii and table.num_rows:
        texts = table["intent_text"].to_pylist()
        scrubbed = pa.array([scrub_pii(t) for t in texts], pa.string())
        table = table.set_column(
            table.schema.get_field_index("intent_text"), "intent_text", scrubbed
        )
    return table
